"""Writing the event log. Every event row goes through `add_events`, which also puts it in the
webhook outbox (`webhook_due_at`) when its type is posted (`core.status.POSTED_EVENTS`) and its
account has an event webhook at the moment the row is inserted: a URL, `webhook_enabled`, and
the event's name among `webhook_events` (SendGrid's switches; NULL: all; names without a switch,
`core.status.SENDGRID_EVENTS`, always). This INSERT is the one place that choice is made. It lives with the storage so
that every layer can record what it did; `mailrelay.events` reads, posts and lists the rows.

Whether the account has a webhook is read by the INSERT itself (a subquery on the account's
primary key), not from a per-process cache: a webhook set in another process applies to every
event recorded after that command committed, on every node, at no extra round trip. Events
recorded before the webhook was set are not posted later (as SendGrid's Event Webhook).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import EVENT_NAMES, POSTED_EVENTS, SENDGRID_EVENTS
from mailrelay.store.schema import accounts, events

# Bind names of their own: an INSERT reserves its columns' names for the VALUES clause.
_HOOK_ACCOUNT = sa.bindparam("hook_account_id", type_=sa.Integer)
_HOOK_AT = sa.bindparam("hook_at", type_=sa.Float)  # `at` for a posted type, else null
# LIKE pattern of the event's name as it appears in the JSON list `webhook_events` ('%"bounce"%'),
# or null for a name with no switch.
_HOOK_NAME = sa.bindparam("hook_name", type_=sa.Text)
# The due time is `hook_at` when the account's webhook is on now and takes this event, else null
# (no row).
_DUE = (sa.select(sa.cast(_HOOK_AT, sa.Float))
        .where(accounts.c.id == _HOOK_ACCOUNT, accounts.c.webhook_url.is_not(None),
               accounts.c.webhook_enabled == sa.true(),
               sa.or_(accounts.c.webhook_events.is_(None), sa.cast(_HOOK_NAME, sa.Text).is_(None),
                      accounts.c.webhook_events.like(_HOOK_NAME)))
        .scalar_subquery())
_INSERT = events.insert().values(webhook_due_at=_DUE)

# SendGrid's names hold no LIKE wildcard but "_", which only widens a match to names that differ
# there: none of the switchable names do.
_PATTERNS = {kind: f'%"{name}"%' for kind, name in EVENT_NAMES.items() if name in SENDGRID_EVENTS}


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
        row["hook_name"] = _PATTERNS.get(row["type"])
    conn.execute(_INSERT, batch)



def dump_event_filter(names: Iterable[str] | None) -> str | None:
    """The stored form of `webhook_events`: a JSON list of SendGrid event names (in
    SENDGRID_EVENTS' order), or None (all) when every one is on. ValueError for another name."""
    if names is None:
        return None
    chosen = set(names)
    unknown = chosen.difference(SENDGRID_EVENTS)
    if unknown:
        raise ValueError(f"unknown event name {sorted(unknown)[0]!r}")
    if chosen == set(SENDGRID_EVENTS):
        return None
    return json.dumps([n for n in SENDGRID_EVENTS if n in chosen])


def load_event_filter(stored: str | None) -> frozenset[str]:
    """The SendGrid event names switched on (all when NULL)."""
    if stored is None:
        return frozenset(SENDGRID_EVENTS)
    try:
        names = json.loads(stored)
    except ValueError:
        return frozenset(SENDGRID_EVENTS)
    return frozenset(n for n in names if n in SENDGRID_EVENTS) if isinstance(names, list) else frozenset()
