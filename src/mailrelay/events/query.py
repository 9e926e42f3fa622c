"""Reading the event log for `mailrelay events` (read-only)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from mailrelay.accounts.service import AccountError
from mailrelay.store.schema import accounts, events


@dataclass(frozen=True, slots=True)
class EventEntry:
    id: int
    at: float
    account: str | None
    message_id: str | None
    recipient: str | None
    type: str
    attempt: int | None
    mx_host: str | None
    reply: str | None
    detail: str


def account_id(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).scalar()
    if found is None:
        raise AccountError(f"no account named {name!r}")
    return int(found)


def read_events(engine: sa.Engine, *, account: int | None = None, message: str | None = None,
                type: str | None = None, limit: int = 50, after: int | None = None) -> list[EventEntry]:
    """Oldest first: the newest `limit` events, or with `after`, the first `limit` after that id."""
    query = (sa.select(events, accounts.c.name.label("account_name"))
             .select_from(events.outerjoin(accounts, accounts.c.id == events.c.account_id)))
    if account is not None:
        query = query.where(events.c.account_id == account)
    if message is not None:
        query = query.where(events.c.message_id == message)
    if type is not None:
        query = query.where(events.c.type == type)
    if after is not None:
        query = query.where(events.c.id > after).order_by(events.c.id).limit(limit)
    else:
        query = query.order_by(events.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out = [EventEntry(r.id, r.at, r.account_name, r.message_id, r.recipient, r.type, r.attempt, r.mx_host,
                      r.reply, r.detail) for r in rows]
    return out if after is not None else out[::-1]
