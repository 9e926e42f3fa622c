"""Writing the event log. Every event row goes through `add_events`, which also puts it in the
webhook outbox (`webhook_due_at`) when its type is posted (`core.status.POSTED_EVENTS`) and its
account has an event webhook at the moment the row is inserted. It lives with the storage so
that every layer can record what it did; `mailrelay.events` reads, posts and lists the rows.

Whether the account has a webhook is read by the INSERT itself (a subquery on the account's
primary key), not from a per-process cache: a webhook set in another process applies to every
event recorded after that command committed, on every node, at no extra round trip. Events
recorded before the webhook was set are not posted later (as SendGrid's Event Webhook).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import POSTED_EVENTS
from mailrelay.store.schema import accounts, events

# Bind names of their own: an INSERT reserves its columns' names for the VALUES clause.
_HOOK_ACCOUNT = sa.bindparam("hook_account_id", type_=sa.Integer)
_HOOK_AT = sa.bindparam("hook_at", type_=sa.Float)  # `at` for a posted type, else null
# The due time is `hook_at` when the account has a webhook now, else null (no row).
_DUE = (sa.select(sa.cast(_HOOK_AT, sa.Float))
        .where(accounts.c.id == _HOOK_ACCOUNT, accounts.c.webhook_url.is_not(None))
        .scalar_subquery())
_INSERT = events.insert().values(webhook_due_at=_DUE)


def add_events(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert event rows (keys: account_id, message_id, recipient, type, detail, at, and
    optionally attempt, reply, mx_host)."""
    batch = [dict(r) for r in rows]
    if not batch:
        return
    for row in batch:
        # the same keys in every row: one executemany
        row.setdefault("message_id", None)
        row.setdefault("recipient", None)
        row.setdefault("detail", "")
        row.setdefault("attempt", None)
        row.setdefault("reply", None)
        row.setdefault("mx_host", None)
        row["hook_account_id"] = row.get("account_id")
        row["hook_at"] = row["at"] if row["type"] in POSTED_EVENTS else None
    conn.execute(_INSERT, batch)
