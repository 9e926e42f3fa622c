"""Which domains receive mail here, and which of their addresses exist: the lookup behind RCPT.

Port 25 asks this for every recipient of every unauthenticated client, so answers (negative
ones too) are cached per process for `ttl` seconds (5 by default: an address just added with
`mailrelay address add` works within seconds), in at most `max_entries` entries per table.
`cached` never touches the database and is safe on the event loop; `lookup` reads the database
on a miss and belongs in an executor thread.

Sub-addressing (Postfix's recipient_delimiter): with a delimiter "+", `user+anything` is a known
address when `user` is and `user+anything` itself is not one of its own. The local part is split
at the first of the delimiter characters, as Postfix does; "" turns this off.

Security: names come from the client. The cache is bounded (expired entries go first, then
the oldest), so a client trying millions of local parts costs memory only up to the bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import sqlalchemy as sa

from mailrelay.settings import InboundSettings
from mailrelay.store.schema import accounts, addresses, domains

DEFAULT_TTL = 5.0
MAX_ENTRIES = 50_000
DEFAULT_DELIMITER = InboundSettings().recipient_delimiter  # inbound.recipient_delimiter's, defined there


@dataclass(frozen=True, slots=True)
class InboundDomain:
    """An inbound domain and what its owner decided for it."""

    id: int
    name: str  # A-labels, lower case
    account_id: int
    account_name: str
    active: bool  # the account is active (a disabled account's domains refuse mail)
    catch_all: bool
    webhook: str | None
    raw: bool
    dmarc_policy: str  # "monitor" | "enforce"


@dataclass(frozen=True, slots=True)
class Found:
    """The answer for one recipient: its domain (None: not one of ours), and whether the
    local part is a known address (always False when the domain is None)."""

    domain: InboundDomain | None
    known: bool


class _Miss:
    pass


MISS: Final = _Miss()
K = TypeVar("K")
V = TypeVar("V")


class _TTLCache(Generic[K, V]):
    """A small dict with per-entry expiry and a size bound; writes take a lock (an executor
    thread fills it while the event loop reads)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._data: dict[K, tuple[V, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | _Miss:
        hit = self._data.get(key)
        if hit is None or hit[1] <= self._clock():
            return MISS
        return hit[0]

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        with self._lock:
            if len(self._data) >= self._max and key not in self._data:
                self._data = {k: v for k, v in self._data.items() if v[1] > now}
                while len(self._data) >= self._max:  # all fresh: forget the oldest
                    del self._data[next(iter(self._data))]
            self._data.pop(key, None)  # re-inserted last: insertion order is age order
            self._data[key] = (value, now + self._ttl)

    def clear(self) -> None:
        with self._lock:
            self._data = {}


class InboundDirectory:
    """Inbound domains and their addresses, read from the database and cached."""

    def __init__(self, engine: sa.Engine, *, ttl: float = DEFAULT_TTL, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic, recipient_delimiter: str = DEFAULT_DELIMITER,
                 ) -> None:
        self._engine = engine
        self._delimiters = recipient_delimiter
        self._domains: _TTLCache[str, InboundDomain | None] = _TTLCache(ttl, max_entries, clock)
        self._addresses: _TTLCache[tuple[int, str], bool] = _TTLCache(ttl, max_entries, clock)

    def cached(self, domain: str, local_part: str) -> Found | _Miss:
        """The cached answer for `local_part@domain` (both lower case, domain as A-labels), or
        MISS when the database must be asked (`lookup`)."""
        d = self._domains.get(domain)
        if isinstance(d, _Miss):
            return MISS
        if d is None or d.catch_all:
            return Found(d, False)
        known = self._addresses.get((d.id, local_part))
        base = self._base(local_part)
        if known is False and base is not None:  # not an address of its own: is its base one?
            known = self._addresses.get((d.id, base))
        if isinstance(known, _Miss):
            return MISS
        return Found(d, known)

    def _base(self, local_part: str) -> str | None:
        """`user` of `user+tag` (split at the first delimiter), or None: no delimiter in it, or
        nothing before it."""
        cut = next((i for i, c in enumerate(local_part) if c in self._delimiters), -1)
        return local_part[:cut] if cut > 0 else None

    def lookup(self, domain: str, local_part: str) -> Found:
        """The answer for `local_part@domain`, from the cache or the database (blocking)."""
        hit = self.cached(domain, local_part)
        if not isinstance(hit, _Miss):
            return hit
        d = self._domains.get(domain)
        with self._engine.connect() as conn:
            if isinstance(d, _Miss):
                d = self._load_domain(conn, domain)
                self._domains.put(domain, d)
            if d is None or d.catch_all:
                return Found(d, False)
            base = self._base(local_part)
            wanted = [local_part] if base is None else [local_part, base]
            found = set(conn.execute(sa.select(addresses.c.local_part).where(
                addresses.c.domain_id == d.id, addresses.c.local_part.in_(wanted))).scalars())
        for name in wanted:
            self._addresses.put((d.id, name), name in found)
        return Found(d, local_part in found or base in found)

    def forget(self) -> None:
        """Drop every cached answer (tests; a process that just changed the settings)."""
        self._domains.clear()
        self._addresses.clear()

    @staticmethod
    def _load_domain(conn: sa.Connection, domain: str) -> InboundDomain | None:
        row = conn.execute(
            sa.select(domains.c.id, domains.c.name, domains.c.account_id, domains.c.catch_all,
                      domains.c.inbound_webhook, domains.c.inbound_raw, domains.c.dmarc_policy,
                      accounts.c.name.label("account_name"), accounts.c.status)
            .join(accounts, accounts.c.id == domains.c.account_id)
            .where(domains.c.name == domain, domains.c.inbound.is_(True))).first()
        if row is None:
            return None
        return InboundDomain(id=row.id, name=row.name, account_id=row.account_id,
                             account_name=row.account_name, active=row.status == "active",
                             catch_all=bool(row.catch_all), webhook=row.inbound_webhook,
                             raw=bool(row.inbound_raw), dmarc_policy=row.dmarc_policy)
