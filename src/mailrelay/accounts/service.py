"""Accounts and API keys: create, list, enable/disable, and authenticate SMTP logins.

Exceptions: `AccountError` (a user mistake: unknown account, duplicate, bad name or plan).
Database failures surface as SQLAlchemy errors; callers turn them into StorageError.

Security: verifies passwords and API key secrets against argon2id hashes; plaintext is
never stored or logged. `authenticate` does the same hashing work whether or not the user
or key exists, so response time does not reveal which names exist.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailrelay.accounts import keys
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

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")


class AccountError(Exception):
    """A user mistake about accounts or keys; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    plan: str
    status: str
    created_at: float
    sandbox: bool = False  # mail is captured, never delivered
    chaos: str | None = None  # JSON: the sandbox's simulated failures, see mailrelay.sandbox


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_name: str
    label: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

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


def _account(row: Any) -> Account:
    return Account(id=row.id, name=row.name, plan=row.plan, status=row.status,
                   created_at=row.created_at, sandbox=bool(row.sandbox), chaos=row.chaos)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(id=row.id, account_name=row.account_name, label=row.label,
                  created_at=row.created_at, revoked_at=row.revoked_at,
                  last_used_at=row.last_used_at)


_ACCOUNT_COLS = (accounts.c.id, accounts.c.name, accounts.c.plan, accounts.c.status,
                 accounts.c.created_at, accounts.c.sandbox, accounts.c.chaos)
_KEY_COLS = (api_keys.c.id, accounts.c.name.label("account_name"), api_keys.c.label,
             api_keys.c.created_at, api_keys.c.revoked_at, api_keys.c.last_used_at)


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
        return Account(id=row.id, name=row.name, plan=row.plan, status=status,
                       created_at=row.created_at, sandbox=bool(row.sandbox), chaos=row.chaos)

    def set_sandbox(self, name: str, on: bool, chaos: str | None = None) -> Account:
        """Switch sandbox (capture) mode; `chaos` is the JSON of mailrelay.sandbox.chaos, and
        is cleared when the sandbox is switched off. Sessions logged in already keep the
        account as they read it; new logins see the change."""
        chaos = chaos if on else None
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(sandbox=on, chaos=chaos, updated_at=self._clock()))
        return Account(id=row.id, name=row.name, plan=row.plan, status=row.status,
                       created_at=row.created_at, sandbox=on, chaos=chaos)

    def set_password(self, name: str, password: str) -> None:
        validate_password(password)
        password_hash = self._hasher.hash(password)
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id)
                         .values(password_hash=password_hash, updated_at=self._clock()))

    # -- API keys ----------------------------------------------------------------------------

    def create_key(self, name: str, label: str = "") -> tuple[ApiKey, str]:
        """Create a key for account `name`; the full key is returned here and never again."""
        if len(label) > MAX_LABEL or has_control_chars(label):
            raise AccountError(f"invalid label: at most {MAX_LABEL} printable characters")
        key_id, secret = keys.new_key()
        secret_hash = self._hasher.hash(secret)
        now = self._clock()
        with self._engine.begin() as conn:
            row = self._require(conn, name)
            conn.execute(api_keys.insert().values(id=key_id, account_id=row.id, label=label,
                                                  secret_hash=secret_hash, created_at=now))
        key = ApiKey(id=key_id, account_name=row.name, label=label, created_at=now,
                     revoked_at=None, last_used_at=None)
        return key, keys.format_key(key_id, secret)

    def list_keys(self, name: str | None = None) -> builtins.list[ApiKey]:
        query = (sa.select(*_KEY_COLS).join(accounts, accounts.c.id == api_keys.c.account_id)
                 .order_by(accounts.c.name, api_keys.c.created_at, api_keys.c.id))
        with self._engine.connect() as conn:
            if name is not None:
                self._require(conn, name)
                query = query.where(accounts.c.name == name)
            rows = conn.execute(query).all()
        return [_api_key(r) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke by id (or full key); revoking a revoked key keeps its first revocation time."""
        parsed_id = keys.key_id_of(key_id)
        if parsed_id is None:
            raise AccountError("not an API key id: expected the id shown by `account key list`")
        query = (sa.select(*_KEY_COLS).join(accounts, accounts.c.id == api_keys.c.account_id)
                 .where(api_keys.c.id == parsed_id))
        with self._engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                raise AccountError(f"no API key with id {parsed_id!r}")
            key = _api_key(row)
            if key.revoked_at is not None:
                return key
            now = self._clock()
            conn.execute(api_keys.update().where(api_keys.c.id == parsed_id)
                         .values(revoked_at=now))
        return ApiKey(id=key.id, account_name=key.account_name, label=key.label,
                      created_at=key.created_at, revoked_at=now, last_used_at=key.last_used_at)

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
        """The account for an SMTP AUTH login, or None; user `apikey` means password is a key."""
        if len(password) > MAX_PASSWORD or len(username) > 255:
            return None  # refused on length alone, which reveals nothing about who exists
        if username == API_KEY_USER:
            return self._authenticate_key(password)
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

    def _authenticate_key(self, full_key: str) -> Account | None:
        parsed = keys.parse_key(full_key)
        row = None
        if parsed is not None:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(*_ACCOUNT_COLS, api_keys.c.secret_hash, api_keys.c.revoked_at,
                              api_keys.c.id.label("key_id"))
                    .join(api_keys, api_keys.c.account_id == accounts.c.id)
                    .where(api_keys.c.id == parsed[0])
                ).first()
        if parsed is None or row is None:
            self._verify(self._dummy_hash, full_key)
            return None
        if (not self._verify_cached(row.secret_hash, parsed[1]) or row.revoked_at is not None
                or row.status != "active"):
            return None
        with self._engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == row.key_id)
                         .values(last_used_at=self._clock()))
        return _account(row)
