"""Sender domains of accounts, their DKIM keys, the DNS records to publish, and checking them.

Ownership: an account owns the domains it added and every subdomain of them (mail from
news.example.com is covered by example.com, and a d=example.com signature is aligned with it
under DMARC's relaxed mode). So a domain cannot be added when it, a parent or a subdomain of
it belongs to another account. `owner_domain` picks the most specific owned domain.

Selectors: the RSA key is published under `selector`; with both algorithms the Ed25519 key is
under `<selector>-ed`, alone it is under `selector` (RFC 8463 §4: one selector per key).

Exceptions: `DomainError` (a user mistake: bad name, unknown account or domain, taken, bad
key). Database failures surface as SQLAlchemy errors; DNS timeouts in `verify` become a
check with status "error".

Security: stores DKIM private keys (PKCS#8 PEM) in the database; `Domain` carries only the
public records. Imported keys are validated once, here.
"""

from __future__ import annotations

import builtins
import ipaddress
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from mailrelay.resolver.base import DNSTemporaryError, Resolver
from mailrelay.store.schema import accounts, addresses, domains

if TYPE_CHECKING:
    from mailrelay.mailauth.dkim import DKIMKey, KeyKind

# mailrelay.mailauth.dkim is imported inside the functions that need it: it pulls in dkimpy,
# dnspython and cryptography (~70 ms), which every CLI command would otherwise pay at start,
# as cli/main.py imports DomainError from here.

AlgorithmChoice = Literal["rsa", "ed25519", "both"]
ALGORITHM_CHOICES = ("rsa", "ed25519", "both")
DEFAULT_SELECTOR = "mr1"
ED25519_SUFFIX = "-ed"
MAX_SELECTOR = 63 - len(ED25519_SUFFIX)  # the -ed selector must fit the column (and a label)

CheckStatus = Literal["ok", "missing", "different", "error"]

DMARC_POLICIES = ("monitor", "enforce")
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1 (octets)
MAX_WEBHOOK_URL = 2000

# RFC 5894 §4.1: characters IDNA 2003 maps away but IDNA 2008 keeps (ß → ss, ...): the
# stdlib codec would silently name a different domain, so these must be given as A-labels.
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


class DomainError(Exception):
    """A user mistake about domains; the message says what was wrong."""


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


@dataclass(frozen=True, slots=True)
class InboundAddress:
    """A known recipient of an inbound domain: `local_part@domain` (local part lower case)."""

    address: str
    local_part: str
    domain: str
    account_name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class DNSRecord:
    purpose: str  # "dkim", "spf", "dmarc", "mx"
    type: str  # "TXT", "MX"
    name: str  # no trailing dot
    value: str


@dataclass(frozen=True, slots=True)
class RecordCheck:
    record: DNSRecord
    status: CheckStatus
    found: tuple[str, ...] = ()  # what DNS holds at that name (TXT values, MX hosts)
    note: str = ""


# -- names -----------------------------------------------------------------------------------


def normalize_domain(name: str) -> str:
    """`name` as A-labels, lower case, without a trailing dot; or DomainError."""
    text = name.strip()
    shown = text[:80]
    if text.endswith("."):
        text = text[:-1]
    if not text or any(c in _DEVIATIONS for c in text):
        if text:
            raise DomainError(f"domain {shown!r} contains ß, ς or a zero-width joiner, which IDNA "
                              "versions treat differently: give its xn-- form")
        raise DomainError("empty domain name")
    try:
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise DomainError(f"invalid domain {shown!r}: not a valid internationalized name") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_label_ok(label) for label in labels):
        raise DomainError(f"invalid domain {shown!r}: expected a name such as example.com "
                          "(labels of letters, digits and hyphens, at most 63 characters each)")
    if labels[-1].isdigit():
        raise DomainError(f"invalid domain {shown!r}: an IP address is not a domain")
    return ascii_name


def _label_ok(label: str) -> bool:
    return (0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
            and all(c.isascii() and (c.isalnum() or c == "-") for c in label))


def _parents(name: str) -> list[str]:
    """example.com's parents that could be owned: news.example.com → [example.com]."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels) - 1)]


def owner_domain(owned: Iterable[str], name: str) -> str | None:
    """The most specific of `owned` that is `name` or a parent of it, or None."""
    owned_set = owned if isinstance(owned, set | frozenset) else set(owned)
    name = name.lower().rstrip(".")
    for candidate in [name, *_parents(name)]:
        if candidate in owned_set:
            return candidate
    return None


def ed25519_selector(selector: str, *, dual: bool) -> str:
    return selector + ED25519_SUFFIX if dual else selector


# -- rows ------------------------------------------------------------------------------------

_COLS = (domains.c.id, domains.c.name, accounts.c.name.label("account_name"), domains.c.selector,
         domains.c.rsa_private_key, domains.c.ed25519_private_key, domains.c.created_at,
         domains.c.inbound, domains.c.catch_all, domains.c.inbound_webhook, domains.c.inbound_raw,
         domains.c.dmarc_policy)


def _domain(row: Any) -> Domain:
    from mailrelay.mailauth.dkim import public_key_record

    dual = bool(row.rsa_private_key and row.ed25519_private_key)
    keys: list[DKIMSelector] = []
    if row.rsa_private_key:
        keys.append(DKIMSelector("rsa", row.selector,
                                 public_key_record(row.rsa_private_key.encode())))
    if row.ed25519_private_key:
        keys.append(DKIMSelector("ed25519", ed25519_selector(row.selector, dual=dual),
                                 public_key_record(row.ed25519_private_key.encode())))
    return Domain(id=row.id, name=row.name, account_name=row.account_name, selector=row.selector,
                  algorithms=tuple(k.kind for k in keys), created_at=row.created_at,
                  dkim=tuple(keys), inbound=bool(row.inbound), catch_all=bool(row.catch_all),
                  inbound_webhook=row.inbound_webhook, inbound_raw=bool(row.inbound_raw),
                  dmarc_policy=row.dmarc_policy)


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
        from mailrelay.mailauth.dkim import DKIMKeyError, generate_private_key, normalize_private_key

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
            .where(sa.or_(domains.c.name.in_(_parents(domain)),
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

    def list(self, account: str | None = None) -> builtins.list[Domain]:
        query = (sa.select(*_COLS).join(accounts, accounts.c.id == domains.c.account_id)
                 .order_by(domains.c.name))
        with self._engine.connect() as conn:
            rows = conn.execute(_of_account(conn, query, account)).all()
        return [_domain(r) for r in rows]

    def remove(self, name: str) -> Domain:
        found = self.require(name)
        with self._engine.begin() as conn:
            conn.execute(domains.delete().where(domains.c.id == found.id))
        return found

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

    def add_address(self, address: str) -> InboundAddress:
        """Make `address` a known recipient of its domain (which must be added already)."""
        local, domain_name = split_address(address)
        found = self.require(domain_name)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                conn.execute(addresses.insert().values(domain_id=found.id, local_part=local,
                                                       created_at=now))
        except sa.exc.IntegrityError:
            raise DomainError(f"address {local}@{found.name} is already added") from None
        return InboundAddress(f"{local}@{found.name}", local, found.name, found.account_name, now)

    def remove_address(self, address: str) -> InboundAddress:
        local, domain_name = split_address(address)
        found = self.require(domain_name)
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(addresses.c.id, addresses.c.created_at)
                               .where(addresses.c.domain_id == found.id,
                                      addresses.c.local_part == local)).first()
            if row is None:
                raise DomainError(f"no address {local}@{found.name}; see `mailrelay address list`")
            conn.execute(addresses.delete().where(addresses.c.id == row.id))
        return InboundAddress(f"{local}@{found.name}", local, found.name, found.account_name,
                              row.created_at)

    def list_addresses(self, *, domain: str | None = None, account: str | None = None,
                  ) -> builtins.list[InboundAddress]:
        """Known recipients, by domain then local part; of one domain or account if given."""
        query = (sa.select(addresses.c.local_part, addresses.c.created_at, domains.c.name,
                           accounts.c.name.label("account_name"))
                 .join(domains, domains.c.id == addresses.c.domain_id)
                 .join(accounts, accounts.c.id == domains.c.account_id)
                 .order_by(domains.c.name, addresses.c.local_part))
        if domain is not None:
            query = query.where(domains.c.name == self.require(domain).name)
        with self._engine.connect() as conn:
            rows = conn.execute(_of_account(conn, query, account)).all()
        return [InboundAddress(f"{r.local_part}@{r.name}", r.local_part, r.name, r.account_name,
                               r.created_at) for r in rows]

    def signing_keys(self, domain_name: str) -> builtins.list[DKIMKey]:
        """The keys to sign mail of `domain_name` with (exactly that domain): RSA first."""
        from mailrelay.mailauth.dkim import ALGORITHM_OF, DKIMKey

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

    def owns(self, account_id: int, domain: str) -> bool:
        """Whether `domain` is one of the account's domains or a subdomain of one."""
        return owner_domain(self.domains_of(account_id), domain) is not None


def _check_selector(selector: str) -> str:
    from mailrelay.mailauth.dkim import DKIMKeyError, check_selector

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


def split_address(address: str) -> tuple[str, str]:
    """(local part lower case, domain as A-labels) of `user@example.com`, or DomainError."""
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise DomainError(f"invalid address {text[:80]!r}: expected user@example.com")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise DomainError(f"invalid address {text[:80]!r}: the part before @ is over "
                          f"{MAX_LOCAL_PART} bytes")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in '"<>@\\,;' for c in local) \
            or local.startswith(".") or local.endswith(".") or ".." in local:
        raise DomainError(f"invalid address {text[:80]!r}: use a plain local part "
                          "(letters, digits and . _ - + ...)")
    return local.lower(), normalize_domain(domain)


# -- DNS records -----------------------------------------------------------------------------


def dns_records(domain: Domain, *, hostname: str, source_address: str = "") -> builtins.list[DNSRecord]:
    """What to publish for `domain`: DKIM keys, SPF, DMARC, and MX (for replies and bounces)."""
    host = hostname.lower().rstrip(".")
    records = [DNSRecord("dkim", "TXT", f"{k.selector}._domainkey.{domain.name}", k.record)
               for k in domain.dkim]
    records.append(DNSRecord("spf", "TXT", domain.name,
                             " ".join(["v=spf1", *_spf_mechanisms(host, source_address), "~all"])))
    # p=none: collect reports before enforcing (RFC 7489 §6.7's advice for a new sender).
    records.append(DNSRecord("dmarc", "TXT", f"_dmarc.{domain.name}",
                             f"v=DMARC1; p=none; rua=mailto:postmaster@{domain.name}"))
    records.append(DNSRecord("mx", "MX", domain.name, f"10 {host}."))
    return records


def _spf_mechanisms(host: str, source_address: str) -> builtins.list[str]:
    mechanisms = [f"a:{host}"]
    try:
        ip = ipaddress.ip_address(source_address) if source_address else None
    except ValueError:
        ip = None
    if ip is not None and not ip.is_unspecified:
        mechanisms.append(f"ip{ip.version}:{ip}")
    return mechanisms


async def verify(domain: Domain, records: Iterable[DNSRecord], resolver: Resolver,
                 ) -> builtins.list[RecordCheck]:
    """Look each record up and say whether DNS holds it ("ok"), something else, or nothing."""
    checks = []
    for record in records:
        try:
            checks.append(await _check(record, resolver))
        except DNSTemporaryError as exc:
            checks.append(RecordCheck(record, "error", note=str(exc)))
    return checks


async def _check(record: DNSRecord, resolver: Resolver) -> RecordCheck:
    if record.type == "MX":
        answer = await resolver.mx(record.name)
        hosts = tuple(host for _, host in answer.hosts)
        want = record.value.split()[-1].lower().rstrip(".")
        if answer.kind == "mx" and want in hosts:
            return RecordCheck(record, "ok", hosts)
        if answer.kind in ("mx", "null"):
            return RecordCheck(record, "different", hosts or (".",),
                               "null MX: the domain accepts no mail" if answer.kind == "null" else "")
        return RecordCheck(record, "missing")
    found = tuple(await resolver.txt(record.name))
    if record.purpose == "dkim":
        want_key = _tags(record.value).get("p")
        keys = [t for t in found if "p" in _tags(t)]
        if any(_tags(t)["p"] == want_key for t in keys):
            return RecordCheck(record, "ok", found)
        return RecordCheck(record, "different" if keys else "missing", found)
    if record.purpose == "spf":
        spf = [t for t in found if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if not spf:
            return RecordCheck(record, "missing", found)
        if len(spf) > 1:
            # RFC 7208 §4.5: more than one SPF record is a permanent error.
            return RecordCheck(record, "different", tuple(spf), "more than one SPF record")
        mechanisms = {m.lstrip("+").lower() for m in spf[0].split()[1:]}
        wanted = record.value.split()[1:-1]
        if any(m in mechanisms for m in wanted):
            return RecordCheck(record, "ok", tuple(spf))
        return RecordCheck(record, "different", tuple(spf), f"does not authorize {wanted[0]}")
    if record.purpose == "dmarc":
        dmarc = tuple(t for t in found if _tags(t).get("v", "").upper() == "DMARC1")
        if dmarc:
            return RecordCheck(record, "ok", dmarc)
        return RecordCheck(record, "missing", found)
    raise AssertionError(f"unknown record purpose {record.purpose!r}")  # pragma: no cover


def _tags(text: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 §3.2), whitespace inside values removed; {} if not one."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        tag, sep, value = part.partition("=")
        if sep:
            tags.setdefault(tag.strip(), "".join(value.split()))
    return tags


def _of_account(conn: sa.Connection, query: sa.Select[Any], account: str | None) -> sa.Select[Any]:
    """`query` limited to `account`'s rows (joined with accounts), if one is named; an unknown
    name is an error rather than an empty list."""
    if account is None:
        return query
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).first() is None:
        raise DomainError(f"no account named {account[:80]!r}")
    return query.where(accounts.c.name == account)
