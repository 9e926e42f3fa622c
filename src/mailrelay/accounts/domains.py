"""Sender domains of accounts: storage, their DKIM keys, and their receiving settings.

Verification: a domain is added unverified and is used for sending (require_own_domain, DKIM
signing: `verified_domains_of`) only once its DNS records were checked and found in place, or an
operator marked it verified by hand (`mark_verified`). Adding a domain proves nothing: anyone
may add gmail.com, nobody but Google can publish its records. Receiving is not gated by it.

Ownership: an account owns the domains it added and every subdomain of them (mail from
news.example.com is covered by example.com, and a d=example.com signature is aligned with it
under DMARC's relaxed mode). So a domain cannot be added when it, a parent or a subdomain of
it belongs to another account. `core.domains.owner_domain` picks the most specific owned one;
the name rules are there too, the DNS records to publish in `accounts.dnsrecords`, the known
addresses of inbound domains in `accounts.addresses`.

Selectors: the RSA key is published under `selector`; with both algorithms the Ed25519 key is
under `<selector>-ed`, alone it is under `selector` (RFC 8463 §4: one selector per key).

Rotation (`start_rotation`, `finish_rotation`, `cancel_rotation`): a new key pair of the same
algorithms is made under a new selector and kept as the domain's *next* key while mail is still
signed with the current one; its record is published, and once DNS shows it (the caller checks:
`accounts.dnsrecords`) the next key takes over in one transaction. The replaced key's selectors
are remembered (`previous_selectors`, `retired_at`): their records should stay published a few
days, for mail still in transit.

Exceptions: `core.domains.DomainError` (a user mistake: bad name, unknown account or domain,
taken, bad key). Database failures surface as SQLAlchemy errors.

Security: stores DKIM private keys (PKCS#8 PEM) in the database; `Domain` carries only the
public records. Imported keys are validated once, here.
"""

from __future__ import annotations

import builtins
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from mailrelay.core.domains import DomainError, normalize_domain, owner_domain, parent_domains
from mailrelay.store.schema import accounts, domains

if TYPE_CHECKING:
    from mailrelay.mailauth.dkimsign import DKIMKey, KeyKind

# mailrelay.mailauth.dkimsign is imported inside the functions that need it: it pulls in dkimpy,
# dnspython and cryptography (~70 ms), which every CLI command would otherwise pay at start,
# as the command line imports this module to build its parser.

AlgorithmChoice = Literal["rsa", "ed25519", "both"]
ALGORITHM_CHOICES = ("rsa", "ed25519", "both")
DEFAULT_SELECTOR = "mr1"
ED25519_SUFFIX = "-ed"
MAX_SELECTOR = 63 - len(ED25519_SUFFIX)  # the -ed selector must fit the column (and a label)

DMARC_POLICIES = ("monitor", "enforce")
MAX_WEBHOOK_URL = 2000


@dataclass(frozen=True, slots=True)
class DKIMSelector:
    """One published DKIM key: kind ("rsa" | "ed25519"), selector, and its TXT value."""

    kind: KeyKind
    selector: str
    record: str


@dataclass(frozen=True, slots=True)
class Domain:
    id: int
    name: str  # A-labels, lower case, no trailing dot
    account_name: str
    selector: str
    algorithms: tuple[str, ...]  # "rsa", "ed25519", in that order
    created_at: float
    dkim: tuple[DKIMSelector, ...] = ()
    # Receiving (port 25): mail to known addresses (or any, with catch_all) is accepted and
    # POSTed to inbound_webhook (the whole message in one field with inbound_raw), or kept.
    inbound: bool = False
    catch_all: bool = False
    inbound_webhook: str | None = None
    inbound_raw: bool = False
    dmarc_policy: str = "monitor"  # "monitor": only record; "enforce": apply p=reject/quarantine
    verified_at: float | None = None  # None: not usable for sending yet
    # Rotation: the next key (published, not signing yet), and the selectors it last replaced.
    next_selector: str | None = None
    next_dkim: tuple[DKIMSelector, ...] = ()
    rotation_started_at: float | None = None
    previous_selectors: tuple[str, ...] = ()
    retired_at: float | None = None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def rotating(self) -> bool:
        return self.next_selector is not None


def ed25519_selector(selector: str, *, dual: bool) -> str:
    return selector + ED25519_SUFFIX if dual else selector


# -- rows ------------------------------------------------------------------------------------

_COLS = (domains.c.id, domains.c.name, accounts.c.name.label("account_name"), domains.c.selector,
         domains.c.rsa_private_key, domains.c.ed25519_private_key, domains.c.created_at,
         domains.c.inbound, domains.c.catch_all, domains.c.inbound_webhook, domains.c.inbound_raw,
         domains.c.dmarc_policy, domains.c.verified_at, domains.c.next_selector,
         domains.c.next_rsa_private_key, domains.c.next_ed25519_private_key,
         domains.c.rotation_started_at, domains.c.previous_selectors, domains.c.retired_at)


def _selectors(selector: str, rsa_pem: str | None, ed_pem: str | None) -> builtins.list[DKIMSelector]:
    from mailrelay.mailauth.dkimsign import public_key_record

    dual = bool(rsa_pem and ed_pem)
    keys: builtins.list[DKIMSelector] = []
    if rsa_pem:
        keys.append(DKIMSelector("rsa", selector, public_key_record(rsa_pem.encode())))
    if ed_pem:
        keys.append(DKIMSelector("ed25519", ed25519_selector(selector, dual=dual),
                                 public_key_record(ed_pem.encode())))
    return keys


def _domain(row: Any) -> Domain:
    keys = _selectors(row.selector, row.rsa_private_key, row.ed25519_private_key)
    next_keys = (_selectors(row.next_selector, row.next_rsa_private_key, row.next_ed25519_private_key)
                 if row.next_selector else [])
    return Domain(id=row.id, name=row.name, account_name=row.account_name, selector=row.selector,
                  algorithms=tuple(k.kind for k in keys), created_at=row.created_at,
                  dkim=tuple(keys), inbound=bool(row.inbound), catch_all=bool(row.catch_all),
                  inbound_webhook=row.inbound_webhook, inbound_raw=bool(row.inbound_raw),
                  dmarc_policy=row.dmarc_policy, verified_at=row.verified_at,
                  next_selector=row.next_selector, next_dkim=tuple(next_keys),
                  rotation_started_at=row.rotation_started_at,
                  previous_selectors=tuple((row.previous_selectors or "").split()),
                  retired_at=row.retired_at)


class DomainService:
    """Synchronous domain store on SQLAlchemy Core."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def add(self, name: str, account: str, *, selector: str = DEFAULT_SELECTOR,
            algorithm: AlgorithmChoice = "rsa", private_key_pem: bytes | None = None,
            inbound: bool = False, catch_all: bool = False, webhook: str | None = None,
            raw: bool = False, dmarc_policy: str = "monitor") -> Domain:
        """Add `name` to `account` with new keys, or with the imported key (its kind decides
        the algorithm; `algorithm` is then ignored); `inbound`: it receives mail too."""
        domain = normalize_domain(name)
        selector = _check_selector(selector)
        receiving = _inbound_values(inbound=inbound, catch_all=catch_all, webhook=webhook,
                                    raw=raw, dmarc_policy=dmarc_policy)
        rsa_pem, ed_pem = self._keys(algorithm, private_key_pem)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                account_row = conn.execute(sa.select(accounts.c.id, accounts.c.name)
                                           .where(accounts.c.name == account)).first()
                if account_row is None:
                    raise DomainError(f"no account named {account[:80]!r}")
                self._check_free(conn, domain, account_row.id)
                new_id = conn.execute(
                    domains.insert().values(account_id=account_row.id, name=domain,
                                            selector=selector, rsa_private_key=rsa_pem,
                                            ed25519_private_key=ed_pem, created_at=now,
                                            **receiving)
                    .returning(domains.c.id)).scalar_one()
        except sa.exc.IntegrityError:  # added by someone else since _check_free
            raise DomainError(f"domain {domain} is already added") from None
        found = self.get(domain)
        assert found is not None and found.id == new_id
        return found

    @staticmethod
    def _keys(algorithm: str, pem: bytes | None) -> tuple[str | None, str | None]:
        from mailrelay.mailauth.dkimsign import DKIMKeyError, generate_private_key, normalize_private_key

        if pem is not None:
            try:
                kind, pkcs8 = normalize_private_key(pem)
            except DKIMKeyError as exc:
                raise DomainError(str(exc)) from None
            text = pkcs8.decode("ascii")
            return (text, None) if kind == "rsa" else (None, text)
        if algorithm not in ALGORITHM_CHOICES:
            raise DomainError(f"unknown algorithm {algorithm[:40]!r}: expected one of "
                              f"{', '.join(ALGORITHM_CHOICES)}")
        rsa_pem = generate_private_key("rsa").decode("ascii") if algorithm != "ed25519" else None
        ed_pem = generate_private_key("ed25519").decode("ascii") if algorithm != "rsa" else None
        return rsa_pem, ed_pem

    @staticmethod
    def _check_free(conn: sa.Connection, domain: str, account_id: int) -> None:
        row = conn.execute(sa.select(domains.c.name, domains.c.account_id, accounts.c.name.label("owner"))
                           .join(accounts, accounts.c.id == domains.c.account_id)
                           .where(domains.c.name == domain)).first()
        if row is not None:
            if row.account_id == account_id:
                raise DomainError(f"domain {domain} is already added to account {row.owner}")
            raise DomainError(f"domain {domain} is already taken by another account")
        # A-labels hold no % or _, so LIKE matches literally here.
        overlap = conn.execute(
            sa.select(domains.c.name)
            .where(domains.c.account_id != account_id)
            .where(sa.or_(domains.c.name.in_(parent_domains(domain)),
                          domains.c.name.like(f"%.{domain}")))
            .limit(1)).scalar()
        if overlap is not None:
            raise DomainError(f"domain {domain} overlaps {overlap}, which belongs to another account")

    def get(self, name: str) -> Domain | None:
        try:
            domain = normalize_domain(name)
        except DomainError:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*_COLS).join(accounts, accounts.c.id == domains.c.account_id)
                               .where(domains.c.name == domain)).first()
        return _domain(row) if row else None

    def require(self, name: str) -> Domain:
        found = self.get(name)
        if found is None:
            raise DomainError(f"no domain named {name[:80]!r}; see `mailrelay domain list`")
        return found

    def account_domains(self, account_id: int, domain_id: int | None = None) -> builtins.list[Domain]:
        """The account's domains (only the one with `domain_id`, if given and the account's)."""
        query = (sa.select(*_COLS).join(accounts, accounts.c.id == domains.c.account_id)
                 .where(domains.c.account_id == account_id).order_by(domains.c.id))
        if domain_id is not None:
            query = query.where(domains.c.id == domain_id)
        with self._engine.connect() as conn:
            return [_domain(r) for r in conn.execute(query)]

    def list(self, account: str | None = None) -> builtins.list[Domain]:
        query = (sa.select(*_COLS).join(accounts, accounts.c.id == domains.c.account_id)
                 .order_by(domains.c.name))
        with self._engine.connect() as conn:
            rows = conn.execute(of_account(conn, query, account)).all()
        return [_domain(r) for r in rows]

    def remove(self, name: str) -> Domain:
        found = self.require(name)
        with self._engine.begin() as conn:
            conn.execute(domains.delete().where(domains.c.id == found.id))
        return found

    def mark_verified(self, name: str) -> Domain:
        """Record that `name` is verified (its records were found, or an operator says so);
        the first time is kept."""
        found = self.require(name)
        if found.verified_at is None:
            with self._engine.begin() as conn:
                conn.execute(domains.update().where(domains.c.id == found.id)
                             .where(domains.c.verified_at.is_(None)).values(verified_at=self._clock()))
        return self.require(found.name)

    # -- key rotation ----------------------------------------------------------------------

    def start_rotation(self, name: str, selector: str | None = None) -> Domain:
        """Make the next key (the same algorithms as the current one) under `selector`, or
        under mrYYYYMM (a letter added if taken); mail is still signed with the current key."""
        found = self.require(name)
        if found.rotating:
            raise DomainError(f"domain {found.name} is already rotating to selector {found.next_selector}: "
                              "finish or cancel that rotation first")
        dual = len(found.dkim) == 2
        taken = {k.selector for k in found.dkim} | set(found.previous_selectors)

        def clashes(s: str) -> bool:
            return bool({s, ed25519_selector(s, dual=dual)} & taken)

        if selector is None or not selector.strip():
            base = "mr" + time.strftime("%Y%m", time.gmtime(self._clock()))
            selector = next(c for c in (base, *(base + chr(ord("b") + i) for i in range(25)), "mr" + str(found.id))
                            if not clashes(c))
        selector = _check_selector(selector.strip())
        if clashes(selector):
            raise DomainError(f"selector {selector} is in use (or was until the last rotation) for "
                              f"{found.name}: choose another")
        rsa_pem, ed_pem = self._keys("both" if dual else found.algorithms[0], None)
        with self._engine.begin() as conn:
            changed = conn.execute(
                domains.update().where(domains.c.id == found.id).where(domains.c.next_selector.is_(None))
                .values(next_selector=selector, next_rsa_private_key=rsa_pem,
                        next_ed25519_private_key=ed_pem, rotation_started_at=self._clock())).rowcount
        if changed != 1:
            raise DomainError(f"domain {found.name} was removed or started rotating meanwhile")
        return self.require(found.name)

    def finish_rotation(self, name: str, selector: str) -> Domain:
        """The next key (under `selector`: the one whose records were checked) becomes the
        current one, in one transaction; the old selectors are remembered as retired."""
        found = self.require(name)
        if not found.rotating:
            raise DomainError(f"domain {found.name} is not rotating its DKIM key: start with "
                              f"`mailrelay domain rotate {found.name}`")
        with self._engine.begin() as conn:
            changed = conn.execute(
                domains.update().where(domains.c.id == found.id).where(domains.c.next_selector == selector)
                .values(selector=domains.c.next_selector, rsa_private_key=domains.c.next_rsa_private_key,
                        ed25519_private_key=domains.c.next_ed25519_private_key,
                        previous_selectors=" ".join(k.selector for k in found.dkim),
                        retired_at=self._clock(), next_selector=None, next_rsa_private_key=None,
                        next_ed25519_private_key=None, rotation_started_at=None)).rowcount
        if changed != 1:
            raise DomainError(f"the rotation of {found.name} changed meanwhile: look again")
        return self.require(found.name)

    def cancel_rotation(self, name: str) -> Domain:
        """Drop the next key (the current one stays)."""
        found = self.require(name)
        if not found.rotating:
            raise DomainError(f"domain {found.name} is not rotating its DKIM key")
        with self._engine.begin() as conn:
            conn.execute(domains.update().where(domains.c.id == found.id)
                         .values(next_selector=None, next_rsa_private_key=None,
                                 next_ed25519_private_key=None, rotation_started_at=None))
        return self.require(found.name)

    # -- receiving -------------------------------------------------------------------------

    def set_inbound(self, name: str, *, inbound: bool = True, catch_all: bool | None = None,
                    webhook: str | None = None, clear_webhook: bool = False, raw: bool | None = None,
                    dmarc_policy: str | None = None) -> Domain:
        """Turn receiving on (or off) for `name`; the other settings change only when given."""
        found = self.require(name)
        values: dict[str, Any] = {"inbound": inbound}
        if catch_all is not None:
            values["catch_all"] = catch_all
        if clear_webhook:
            values["inbound_webhook"] = None
        elif webhook is not None:
            values["inbound_webhook"] = check_webhook_url(webhook)
        if raw is not None:
            values["inbound_raw"] = raw
        if dmarc_policy is not None:
            values["dmarc_policy"] = _check_dmarc_policy(dmarc_policy)
        with self._engine.begin() as conn:
            conn.execute(domains.update().where(domains.c.id == found.id).values(**values))
        return self.require(found.name)

    def signing_keys(self, domain_name: str) -> builtins.list[DKIMKey]:
        """The keys to sign mail of `domain_name` with (exactly that domain): RSA first."""
        from mailrelay.mailauth.dkimsign import ALGORITHM_OF, DKIMKey

        domain = normalize_domain(domain_name)
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(domains.c.selector, domains.c.rsa_private_key,
                                         domains.c.ed25519_private_key)
                               .where(domains.c.name == domain)).first()
        if row is None:
            raise DomainError(f"no domain named {domain!r}")
        dual = bool(row.rsa_private_key and row.ed25519_private_key)
        keys = []
        if row.rsa_private_key:
            keys.append(DKIMKey(domain, row.selector, ALGORITHM_OF["rsa"],
                                row.rsa_private_key.encode()))
        if row.ed25519_private_key:
            keys.append(DKIMKey(domain, ed25519_selector(row.selector, dual=dual),
                                ALGORITHM_OF["ed25519"], row.ed25519_private_key.encode()))
        return keys

    def domains_of(self, account_id: int) -> set[str]:
        """The domains the account added (their subdomains are owned too: see `owns`)."""
        with self._engine.connect() as conn:
            return set(conn.execute(sa.select(domains.c.name)
                                    .where(domains.c.account_id == account_id)).scalars())

    def verified_domains_of(self, account_id: int) -> set[str]:
        """The account's domains usable for sending: the verified ones."""
        with self._engine.connect() as conn:
            return set(conn.execute(sa.select(domains.c.name)
                                    .where(domains.c.account_id == account_id)
                                    .where(domains.c.verified_at.is_not(None))).scalars())

    def owns(self, account_id: int, domain: str) -> bool:
        """Whether `domain` is one of the account's domains or a subdomain of one."""
        return owner_domain(self.domains_of(account_id), domain) is not None


def _check_selector(selector: str) -> str:
    from mailrelay.mailauth.dkimsign import DKIMKeyError, check_selector

    selector = selector.lower()
    try:
        check_selector(selector)
    except DKIMKeyError as exc:
        raise DomainError(str(exc)) from None
    if len(selector) > MAX_SELECTOR:
        raise DomainError(f"selector {selector!r} too long: at most {MAX_SELECTOR} characters")
    return selector


# -- receiving settings ----------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """An http(s) URL with a host and no fragment, or DomainError."""
    url = url.strip()
    if len(url) > MAX_WEBHOOK_URL or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise DomainError("webhook URL must be one line without spaces, at most "
                          f"{MAX_WEBHOOK_URL} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise DomainError(f"webhook URL is not valid: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise DomainError("webhook URL must start with http:// or https:// and name a host, "
                          "e.g. https://hooks.example.com/parse")
    if parts.fragment:
        raise DomainError("webhook URL must not have a #fragment")
    return url


def _check_dmarc_policy(policy: str) -> str:
    if policy not in DMARC_POLICIES:
        raise DomainError(f"unknown DMARC policy {policy[:20]!r}: expected monitor or enforce")
    return policy


def _inbound_values(*, inbound: bool, catch_all: bool, webhook: str | None, raw: bool,
                    dmarc_policy: str) -> dict[str, Any]:
    return {"inbound": inbound, "catch_all": catch_all,
            "inbound_webhook": check_webhook_url(webhook) if webhook is not None else None,
            "inbound_raw": raw, "dmarc_policy": _check_dmarc_policy(dmarc_policy)}


def of_account(conn: sa.Connection, query: sa.Select[Any], account: str | None) -> sa.Select[Any]:
    """`query` limited to `account`'s rows (joined with accounts), if one is named; an unknown
    name is an error rather than an empty list."""
    if account is None:
        return query
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).first() is None:
        raise DomainError(f"no account named {account[:80]!r}")
    return query.where(accounts.c.name == account)
