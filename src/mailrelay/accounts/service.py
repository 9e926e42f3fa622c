"""Accounts and API keys: create, list, enable/disable, and authenticate SMTP logins.

An API key has SendGrid's scopes (mailrelay.accounts.scopes) or full access; a key logs in
over SMTP only if it may send (`mail.send`).

Exceptions: `AccountError` (a user mistake: unknown account, duplicate, bad name or plan,
unknown scope); its subclass `KeyNotFound` when a key id names no key of the account.
Database failures surface as SQLAlchemy errors; callers turn them into StorageError.

Security: verifies passwords and API key secrets against argon2id hashes; plaintext is
never stored or logged. `authenticate` does the same hashing work whether or not the user
or key exists, so response time does not reveal which names exist.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailrelay.accounts import keys
from mailrelay.accounts import scopes as scope_names
from mailrelay.accounts.passwords import generate_password
from mailrelay.core.text import has_control_chars
from mailrelay.store.schema import accounts, api_keys

STATUSES = ("active", "disabled")
Status = Literal["active", "disabled"]

API_KEY_USER = "apikey"  # SendGrid: AUTH as user "apikey" with the key as password
MAX_NAME = 64
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 hashes any length; refuse megabyte "passwords" before hashing
MAX_LABEL = 128
LAST_USED_EVERY = 60.0  # seconds: a key's last_used_at is written at most this often
MAX_KEYS = 100  # active keys per account: SendGrid's limit (the API and the dashboard refuse more)

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")


class AccountError(Exception):
    """A user mistake about accounts or keys; the message says what was wrong."""


class KeyNotFound(AccountError):
    """No such key, or it belongs to another account (the two are not told apart)."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    plan: str
    status: str
    created_at: float
    sandbox: bool = False  # mail is captured, never delivered
    chaos: str | None = None  # JSON: the sandbox's simulated failures, see mailrelay.sandbox
    operator: bool = False  # may use the dashboard's operator pages (`mailrelay operator grant`)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_name: str
    label: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None
    scopes: tuple[str, ...] | None = None  # sorted; None: full access

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def validate_name(name: str) -> str:
    """Return `name` if it is a valid account name, else raise AccountError."""
    if not _NAME.match(name):
        raise AccountError(
            f"invalid account name {name[:80]!r}: use 1-{MAX_NAME} characters from "
            "A-Z a-z 0-9 . _ @ -"
        )
    if name.lower() == API_KEY_USER:
        raise AccountError(f"account name {name!r} is reserved for API key logins")
    return name


def validate_plan(plan: str, known: Iterable[str] | None = None) -> str:
    """A plan name; with `known` (the configured plans, [plans.NAME]) it must be one of them."""
    names = tuple(known) if known is not None else None
    if names is not None and plan not in names:
        raise AccountError(f"unknown plan {plan[:40]!r}: expected one of {', '.join(names)} "
                           "(plans are defined in the config, [plans.NAME])")
    if not plan or len(plan) > 32 or not all(c.isalnum() or c in "-_" for c in plan):
        raise AccountError(f"invalid plan name {plan[:40]!r}: 1-32 letters, digits, - or _")
    return plan


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password too long: use at most {MAX_PASSWORD} characters")
    if has_control_chars(password):
        raise AccountError("password must not contain control characters")
    return password


def validate_scopes(requested: Iterable[str] | None) -> tuple[str, ...] | None:
    """A requested scope list, sorted and without repeats; None (or every scope) is full access.

    Raises AccountError naming the first unknown scope.
    """
    if requested is None:
        return None
    if isinstance(requested, str):
        raise AccountError("scopes must be a list of scope names, not one string")
    names = builtins.list(requested)
    if not all(isinstance(n, str) for n in names):
        raise AccountError("scopes must be a list of scope names (strings)")
    unknown = scope_names.unknown(names)
    if unknown:
        raise AccountError(f"unknown scope {unknown[0][:80]!r}: not one of the SendGrid "
                           "scopes mailrelay honours")
    chosen = tuple(sorted(set(names)))
    return None if set(chosen) == scope_names.FULL_ACCESS else chosen


def _account(row: Any) -> Account:
    return Account(id=row.id, name=row.name, plan=row.plan, status=row.status,
                   created_at=row.created_at, sandbox=bool(row.sandbox), chaos=row.chaos,
                   operator=bool(row.operator))


def _api_key(row: Any) -> ApiKey:
    return ApiKey(id=row.id, account_name=row.account_name, label=row.label,
                  created_at=row.created_at, revoked_at=row.revoked_at,
                  last_used_at=row.last_used_at, scopes=scope_names.load(row.scopes))


_ACCOUNT_COLS = (accounts.c.id, accounts.c.name, accounts.c.plan, accounts.c.status,
                 accounts.c.created_at, accounts.c.sandbox, accounts.c.chaos, accounts.c.operator)
_KEY_COLS = (api_keys.c.id, accounts.c.name.label("account_name"), api_keys.c.label,
             api_keys.c.created_at, api_keys.c.revoked_at, api_keys.c.last_used_at,
             api_keys.c.scopes)
_KEYS = sa.select(*_KEY_COLS).join(accounts, accounts.c.id == api_keys.c.account_id)

# Read on every API request: built once (building the statement cost more than running it).
_KEY_QUERY = (sa.select(*_ACCOUNT_COLS, api_keys.c.secret_hash, api_keys.c.revoked_at,
                        api_keys.c.id.label("key_id"), api_keys.c.scopes, api_keys.c.last_used_at)
              .join(api_keys, api_keys.c.account_id == accounts.c.id)
              .where(api_keys.c.id == sa.bindparam("key_id")))


def _check_label(label: str) -> None:
    if len(label) > MAX_LABEL or has_control_chars(label):
        raise AccountError(f"invalid label: at most {MAX_LABEL} printable characters")


class VerifiedCache:
    """Recently verified (hash, secret) pairs, as keyed BLAKE2b digests with an expiry.

    Security: holds no secret, only a digest under a per-process random key; bounded in size.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, float] = {}

    def _digest(self, stored_hash: str, secret: str) -> bytes:
        data = stored_hash.encode() + b"\0" + secret.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def hit(self, stored_hash: str, secret: str) -> bool:
        if self._ttl <= 0:
            return False
        expires = self._entries.get(self._digest(stored_hash, secret))
        return expires is not None and expires > self._clock()

    def add(self, stored_hash: str, secret: str) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[self._digest(stored_hash, secret)] = self._clock() + self._ttl


class AccountService:
    """Synchronous account store on SQLAlchemy Core; the SMTP server calls it in a thread."""

    def __init__(self, engine: sa.Engine, hasher: PasswordHasher, *,
                 clock: Callable[[], float] = time.time, cache_seconds: float = 600.0) -> None:
        self._engine = engine
        self._hasher = hasher
        self._clock = clock
        self._verified = VerifiedCache(cache_seconds)
        self._reader: sa.Connection | None = None  # key_if_known's own connection (_read_key)
        self._reader_thread: int | None = None

    def close(self) -> None:
        """Give back the connection key_if_known keeps (the engine's dispose does not close it)."""
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None

    # -- accounts ----------------------------------------------------------------------------

    def create(self, name: str, password: str, plan: str = "free", *, sandbox: bool = False) -> Account:
        validate_name(name)
        validate_plan(plan)
        validate_password(password)
        password_hash = self._hasher.hash(password)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                new_id = conn.execute(
                    accounts.insert().values(name=name, password_hash=password_hash, plan=plan,
                                             status="active", created_at=now, updated_at=now, sandbox=sandbox)
                    .returning(accounts.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            raise AccountError(f"account {name!r} already exists") from None
        return Account(id=new_id, name=name, plan=plan, status="active", created_at=now, sandbox=sandbox)

    def get(self, name: str) -> Account | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*_ACCOUNT_COLS).where(accounts.c.name == name)).first()
        return _account(row) if row else None

    def _require(self, conn: sa.Connection, name: str) -> Any:
        row = conn.execute(sa.select(*_ACCOUNT_COLS).where(accounts.c.name == name)).first()
        if row is None:
            raise AccountError(f"no account named {name[:80]!r}")
        return row

    def list(self) -> builtins.list[Account]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(*_ACCOUNT_COLS).order_by(accounts.c.name)).all()
        return [_account(r) for r in rows]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one())

    def set_status(self, name: str, status: Status) -> Account:
        if status not in STATUSES:
            raise AccountError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(status=status, updated_at=self._clock()))
        return replace(_account(row), status=status)

    def set_sandbox(self, name: str, on: bool, chaos: str | None = None) -> Account:
        """Switch sandbox (capture) mode; `chaos` is the JSON of mailrelay.sandbox.chaos, and
        is cleared when the sandbox is switched off. Sessions logged in already keep the
        account as they read it; new logins see the change."""
        chaos = chaos if on else None
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(sandbox=on, chaos=chaos, updated_at=self._clock()))
        return replace(_account(row), sandbox=on, chaos=chaos)

    def set_operator(self, name: str, on: bool) -> Account:
        """Let the account use the dashboard's operator pages, or no longer; its sessions see
        the change at their next request."""
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(operator=on, updated_at=self._clock()))
        return replace(_account(row), operator=on)

    def set_password(self, name: str, password: str) -> None:
        validate_password(password)
        password_hash = self._hasher.hash(password)
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(password_hash=password_hash, updated_at=self._clock()))

    # -- API keys ----------------------------------------------------------------------------

    def create_key(self, name: str, label: str = "",
                   scopes: Iterable[str] | None = None) -> tuple[ApiKey, str]:
        """Create a key for account `name` with `scopes` (None: full access); the full key is
        returned here and never again."""
        _check_label(label)
        chosen = validate_scopes(scopes)
        key_id, secret = keys.new_key()
        secret_hash = self._hasher.hash(secret)
        now = self._clock()
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(api_keys.insert().values(id=key_id, account_id=row.id, label=label,
                                                  secret_hash=secret_hash, created_at=now,
                                                  scopes=scope_names.dump(chosen)))
        key = ApiKey(id=key_id, account_name=row.name, label=label, created_at=now,
                     revoked_at=None, last_used_at=None, scopes=chosen)
        return key, keys.format_key(key_id, secret)

    def list_keys(self, name: str | None = None) -> builtins.list[ApiKey]:
        """Every key (revoked ones too), or those of account `name`."""
        query = _KEYS.order_by(accounts.c.name, api_keys.c.created_at, api_keys.c.id)
        with self._engine.connect() as conn:
            if name is not None:
                self._require(conn, name)
                query = query.where(accounts.c.name == name)
            rows = conn.execute(query).all()
        return [_api_key(r) for r in rows]

    def _owned(self, conn: sa.Connection, account_id: int | None, key_id: str) -> ApiKey:
        """The key `key_id` (an id or a full key), if it is account `account_id`'s (None: any
        account's); KeyNotFound otherwise, the same whether it is missing or someone else's."""
        parsed_id = keys.key_id_of(key_id)
        if parsed_id is None:
            raise KeyNotFound("not an API key id: expected the id shown by `account key list`")
        query = _KEYS.where(api_keys.c.id == parsed_id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        row = conn.execute(query).first()
        if row is None:
            raise KeyNotFound(f"no API key with id {parsed_id!r}")
        return _api_key(row)

    def get_key(self, account_id: int, key_id: str) -> ApiKey:
        """Account `account_id`'s key `key_id` (revoked ones too); KeyNotFound otherwise."""
        with self._engine.connect() as conn:
            return self._owned(conn, account_id, key_id)

    def update_key(self, account_id: int, key_id: str, label: str | None = None,
                   scopes: Iterable[str] | None = None) -> ApiKey:
        """Change a key's label and/or scopes (None: leave as is; every scope, such as
        accounts.scopes.FULL_ACCESS, makes it full access). Its next use sees the change."""
        if label is not None:
            _check_label(label)
        chosen = validate_scopes(scopes)
        with self._engine.begin() as conn:
            key = self._owned(conn, account_id, key_id)
            values: dict[str, Any] = {}
            if label is not None:
                values["label"] = label
            if scopes is not None:
                values["scopes"] = scope_names.dump(chosen)
            if values:
                conn.execute(api_keys.update().where(api_keys.c.id == key.id).values(**values))
        return replace(key, label=key.label if label is None else label,
                       scopes=key.scopes if scopes is None else chosen)

    def revoke_key(self, key_id: str, account_id: int | None = None) -> ApiKey:
        """Revoke by id (or full key), of any account or only of `account_id`'s; revoking a
        revoked key keeps its first revocation time. The row stays, for `key list`."""
        with self._engine.begin() as conn:
            key = self._owned(conn, account_id, key_id)
            if key.revoked_at is not None:
                return key
            now = self._clock()
            conn.execute(api_keys.update().where(api_keys.c.id == key.id).values(revoked_at=now))
        return replace(key, revoked_at=now)

    def delete_key(self, account_id: int, key_id: str) -> ApiKey:
        """Remove account `account_id`'s key for good (SendGrid's delete); the key as it was."""
        with self._engine.begin() as conn:
            key = self._owned(conn, account_id, key_id)
            conn.execute(api_keys.delete().where(api_keys.c.id == key.id))
        return key

    # -- authentication ----------------------------------------------------------------------

    @cached_property
    def _dummy_hash(self) -> str:
        # Same parameters as real hashes, so a miss costs what a hit costs.
        return self._hasher.hash(generate_password())

    def _verify(self, stored_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    def _verify_cached(self, stored_hash: str, secret: str) -> bool:
        """argon2 verification, skipped when this exact secret matched this exact hash lately.

        The row is always read afresh, so disabling an account, revoking a key or changing a
        password (a new hash) takes effect at once; only the ~0.1 s argon2 work is saved for
        clients that log in on every connection, as SendGrid-style API clients do.
        """
        if self._verified.hit(stored_hash, secret):
            return True
        if self._verify(stored_hash, secret):
            self._verified.add(stored_hash, secret)
            return True
        return False

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account for an SMTP AUTH login, or None; user `apikey` means password is a key,
        which must allow `mail.send` (all a key can do over SMTP is send)."""
        if len(password) > MAX_PASSWORD or len(username) > 255:
            return None  # refused on length alone, which reveals nothing about who exists
        if username == API_KEY_USER:
            found = self.authenticate_key(password)
            if found is None or not scope_names.allows(found[1], scope_names.MAIL_SEND):
                return None
            return found[0]
        return self._authenticate_password(username, password)

    def _authenticate_password(self, name: str, password: str) -> Account | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(*_ACCOUNT_COLS, accounts.c.password_hash)
                .where(accounts.c.name == name)
            ).first()
        if row is None:
            self._verify(self._dummy_hash, password)
            return None
        if not self._verify_cached(row.password_hash, password) or row.status != "active":
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            # Parameters were raised since this hash was made: upgrade it while we know the
            # password.
            with self._engine.begin() as conn:
                conn.execute(accounts.update().where(accounts.c.id == row.id)
                             .values(password_hash=self._hasher.hash(password)))
        return _account(row)

    def key_if_known(self, full_key: str) -> tuple[Account, frozenset[str] | None] | None:
        """authenticate_key's answer when it needs no argon2 work and no write: a valid key
        whose secret matched lately and whose last_used_at is fresh. None means "ask
        authenticate_key" (which may take 0.1 s of argon2): never a refusal on its own. One
        read by primary key, cheap enough for an event loop on SQLite."""
        parsed = keys.parse_key(full_key) if len(full_key) <= MAX_PASSWORD else None
        if parsed is None:
            return None
        row = self._read_key(parsed[0])
        if (row is None or row.revoked_at is not None or row.status != "active"
                or not self._verified.hit(row.secret_hash, parsed[1])
                or row.last_used_at is None or abs(self._clock() - row.last_used_at) >= LAST_USED_EVERY):
            return None
        granted = scope_names.load(row.scopes)
        return _account(row), None if granted is None else frozenset(granted)

    def _read_key(self, key_id: str) -> Any:
        """The key's row, on a connection kept for the first thread that asks (the event loop's):
        taking one from the pool and giving it back cost as much as the query."""
        if self._reader_thread is None:
            self._reader_thread = threading.get_ident()
        if self._reader_thread != threading.get_ident():
            with self._engine.connect() as conn:
                return conn.execute(_KEY_QUERY, {"key_id": key_id}).first()
        try:
            if self._reader is None:
                self._reader = self._engine.connect()
            row = self._reader.execute(_KEY_QUERY, {"key_id": key_id}).first()
            self._reader.rollback()  # no transaction (and no snapshot) outlives the read
            return row
        except Exception:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.close()
            self._reader = None  # a new connection next time: this one may be broken
            raise

    def authenticate_key(self, full_key: str) -> tuple[Account, frozenset[str] | None] | None:
        """(account, the key's scopes; None: full access) for a valid, unrevoked key of an
        active account, else None. The key's last_used_at is written at most once every
        LAST_USED_EVERY seconds, so a client authenticating every request costs no write."""
        if len(full_key) > MAX_PASSWORD:
            return None  # as in authenticate: refused on length alone
        parsed = keys.parse_key(full_key)
        row = None
        if parsed is not None:
            with self._engine.connect() as conn:
                row = conn.execute(_KEY_QUERY, {"key_id": parsed[0]}).first()
        if parsed is None or row is None:
            self._verify(self._dummy_hash, full_key)
            return None
        if (not self._verify_cached(row.secret_hash, parsed[1]) or row.revoked_at is not None
                or row.status != "active"):
            return None
        now = self._clock()
        if row.last_used_at is None or abs(now - row.last_used_at) >= LAST_USED_EVERY:
            with self._engine.begin() as conn:
                conn.execute(api_keys.update().where(api_keys.c.id == row.key_id)
                             .values(last_used_at=now))
        granted = scope_names.load(row.scopes)
        return _account(row), None if granted is None else frozenset(granted)
