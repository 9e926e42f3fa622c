"""Writing events. Every event row goes through `add_events`, which also puts it in the webhook
outbox (`webhook_due_at`) when its account has an event webhook and the type is one that is
posted (`payload.POSTED`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.events.payload import POSTED
from mailrelay.store.schema import accounts, events

# Accounts with a webhook, per process, refreshed every few seconds: `account webhook NAME URL`
# run in another process takes effect within that time.
_CACHE_SECONDS = 5.0
_lock = threading.Lock()
_hooked: tuple[frozenset[int], float] = (frozenset(), 0.0)


def hooked_accounts(conn: Connection) -> frozenset[int]:
    global _hooked
    ids, expires = _hooked
    now = time.monotonic()
    if now < expires:
        return ids
    ids = frozenset(r.id for r in conn.execute(sa.select(accounts.c.id).where(accounts.c.webhook_url.is_not(None))))
    with _lock:
        _hooked = (ids, now + _CACHE_SECONDS)
    return ids


def forget_hooked_accounts() -> None:
    """Drop the cache (after this process changed a webhook)."""
    global _hooked
    with _lock:
        _hooked = (frozenset(), 0.0)


def add_events(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert event rows (keys: account_id, message_id, recipient, type, detail, at, and
    optionally attempt, reply, mx_host)."""
    batch = [dict(r) for r in rows]
    if not batch:
        return
    hooked = hooked_accounts(conn)
    for row in batch:
        # the same keys in every row: one executemany
        row.setdefault("message_id", None)
        row.setdefault("recipient", None)
        row.setdefault("detail", "")
        row.setdefault("attempt", None)
        row.setdefault("reply", None)
        row.setdefault("mx_host", None)
        posted = row.get("account_id") in hooked and row["type"] in POSTED
        row["webhook_due_at"] = row["at"] if posted else None
    conn.execute(events.insert(), batch)
