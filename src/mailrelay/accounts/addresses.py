"""The known recipients of inbound domains: `user@domain` addresses that port 25 accepts.

An address belongs to an added domain (`accounts.domains`), and goes with it when the domain is
removed. Servers read these rows through their cache (`inbound.directory`); this module only
stores them. Exceptions: `core.domains.DomainError` for a bad address, an unknown domain or
account, or an address added twice.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from mailrelay.accounts.domains import DomainService, of_account
from mailrelay.core.domains import DomainError, split_address
from mailrelay.store.schema import accounts, addresses, domains


@dataclass(frozen=True, slots=True)
class InboundAddress:
    """A known recipient of an inbound domain: `local_part@domain` (local part lower case)."""

    address: str
    local_part: str
    domain: str
    account_name: str
    created_at: float


class AddressService:
    """Synchronous store of known addresses on SQLAlchemy Core."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._domains = DomainService(engine, clock=clock)

    def add(self, address: str) -> InboundAddress:
        """Make `address` a known recipient of its domain (which must be added already)."""
        local, domain_name = split_address(address)
        found = self._domains.require(domain_name)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                conn.execute(addresses.insert().values(domain_id=found.id, local_part=local,
                                                       created_at=now))
        except sa.exc.IntegrityError:
            raise DomainError(f"address {local}@{found.name} is already added") from None
        return InboundAddress(f"{local}@{found.name}", local, found.name, found.account_name, now)

    def remove(self, address: str) -> InboundAddress:
        local, domain_name = split_address(address)
        found = self._domains.require(domain_name)
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(addresses.c.id, addresses.c.created_at)
                               .where(addresses.c.domain_id == found.id,
                                      addresses.c.local_part == local)).first()
            if row is None:
                raise DomainError(f"no address {local}@{found.name}; see `mailrelay address list`")
            conn.execute(addresses.delete().where(addresses.c.id == row.id))
        return InboundAddress(f"{local}@{found.name}", local, found.name, found.account_name,
                              row.created_at)

    def list(self, *, domain: str | None = None, account: str | None = None,
             ) -> builtins.list[InboundAddress]:
        """Known recipients, by domain then local part; of one domain or account if given."""
        query = (sa.select(addresses.c.local_part, addresses.c.created_at, domains.c.name,
                           accounts.c.name.label("account_name"))
                 .join(domains, domains.c.id == addresses.c.domain_id)
                 .join(accounts, accounts.c.id == domains.c.account_id)
                 .order_by(domains.c.name, addresses.c.local_part))
        if domain is not None:
            query = query.where(domains.c.name == self._domains.require(domain).name)
        with self._engine.connect() as conn:
            rows = conn.execute(of_account(conn, query, account)).all()
        return [InboundAddress(f"{r.local_part}@{r.name}", r.local_part, r.name, r.account_name,
                               r.created_at) for r in rows]
