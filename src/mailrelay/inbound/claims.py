"""Inbound recipients waiting for their domain's parse webhook: claiming and settling them.

These run inside the spool writer's transactions (`SpoolWriter.run`). A recipient of received
mail starts `inbound` (to be posted) or `kept` (no webhook: it stays in the account's inbox).
A claim takes its leases with delivery's lease step (spool.leases): the next attempt time is
written *before* the POST, so a process that dies mid-POST leaves recipients that are due again then,
never lost. Posted: `posted`; given up after max_age: `expired`. Every outcome writes events.
On PostgreSQL several nodes claim side by side (`FOR UPDATE SKIP LOCKED`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import (
    EV_INBOUND_DEFERRED,
    EV_INBOUND_EXPIRED,
    EV_INBOUND_KEPT,
    EV_INBOUND_POSTED,
    EXPIRED,
    INBOUND,
    KEPT,
    POSTED,
)
from mailrelay.spool.leases import due, lock_due, take_leases
from mailrelay.spool.schedule import expired
from mailrelay.store import bodies
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import domains, messages, recipients


@dataclass(frozen=True, slots=True)
class InboundPost:
    """Recipients of one message at one domain: one POST to that domain's webhook."""

    message_id: str
    account_id: int
    mail_from: str
    client_ip: str
    created_at: float
    auth: dict[str, Any]
    domain: str
    url: str
    raw_mode: bool
    recipients: tuple[tuple[int, str], ...]  # (recipient id, address)
    attempt: int  # this attempt's number (1 = first)
    data: bytes  # trace headers + body, as stored


def claim(conn: Connection, *, node: str, now: float, limit: int, lease_seconds: float,
          next_attempt: Callable[[int], float]) -> list[InboundPost]:
    """Lease the due `inbound` recipients of at most `limit` messages to `node`; recipients at
    a domain without a webhook any more become `kept`."""
    r = recipients
    is_due = due((INBOUND,), now)
    first = sa.select(r.c.message_id).where(*is_due).order_by(r.c.next_attempt_at, r.c.id).limit(limit)
    msg_ids = sorted({row.message_id for row in conn.execute(first)})
    if not msg_ids:
        return []
    # All the due recipients of those messages, so that one message is one POST per domain.
    rows = conn.execute(lock_due(conn, sa.select(r.c.id, r.c.message_id, r.c.address, r.c.domain, r.c.attempts)
                                 .where(r.c.message_id.in_(msg_ids), *is_due).order_by(r.c.id))).all()
    if not rows:
        return []
    hooks = {d.name: d for d in conn.execute(
        sa.select(domains.c.name, domains.c.inbound_webhook, domains.c.inbound_raw)
        .where(domains.c.name.in_(sorted({row.domain for row in rows}))))}
    msgs = {m.id: m for m in conn.execute(
        sa.select(messages.c.id, messages.c.account_id, messages.c.mail_from, messages.c.client_ip,
                  messages.c.created_at, messages.c.auth).where(messages.c.id.in_(msg_ids)))}
    kept = [row for row in rows if not (hooks.get(row.domain) and hooks[row.domain].inbound_webhook)]
    if kept:
        conn.execute(r.update().where(r.c.id.in_([row.id for row in kept]), r.c.status == INBOUND).values(
            status=KEPT, next_attempt_at=None, lease_owner=None, lease_until=None,
            last_reply="the domain has no inbound webhook: kept in the inbox", updated_at=now))
        add_events(conn, [{"account_id": msgs[row.message_id].account_id, "message_id": row.message_id,
                           "recipient": row.address, "type": EV_INBOUND_KEPT, "at": now,
                           "detail": "the domain has no inbound webhook: kept in the inbox"}
                          for row in kept if row.message_id in msgs])
    kept_ids = {row.id for row in kept}
    posting = [row for row in rows if row.id not in kept_ids and row.message_id in msgs]
    if not posting:
        return []
    take_leases(conn, posting, node=node, now=now, lease_seconds=lease_seconds, next_attempt=next_attempt)
    data = {qid: content.data for qid, content in bodies.load(conn, {row.message_id for row in posting}).items()}
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in posting:
        groups.setdefault((row.message_id, row.domain), []).append(row)
    out = []
    for (mid, domain), group in groups.items():
        m, hook = msgs[mid], hooks[domain]
        out.append(InboundPost(
            message_id=mid, account_id=m.account_id, mail_from=m.mail_from, client_ip=m.client_ip,
            created_at=m.created_at, auth=_auth(m.auth), domain=domain, url=hook.inbound_webhook,
            raw_mode=bool(hook.inbound_raw), recipients=tuple((x.id, x.address) for x in group),
            attempt=max(x.attempts for x in group) + 1, data=data[mid]))
    return out


def settle(conn: Connection, *, post: InboundPost, node: str, now: float, error: str | None, reply: str,
           max_age: float) -> str:
    """Record one POST's outcome for its recipients; returns their new status. Only rows this
    node still leases, still `inbound`, are changed (an operator may have acted meanwhile)."""
    r = recipients
    ids = [rid for rid, _ in post.recipients]
    if error is None:
        status, event = POSTED, EV_INBOUND_POSTED
        values: dict[str, Any] = {"status": POSTED, "next_attempt_at": None}
    elif expired(post.created_at, now, max_age):
        status, event = EXPIRED, EV_INBOUND_EXPIRED
        values = {"status": EXPIRED, "next_attempt_at": None}
    else:
        status, event = INBOUND, EV_INBOUND_DEFERRED  # next_attempt_at was written by the claim
        values = {}
    changed = [x.id for x in conn.execute(sa.select(r.c.id).where(
        r.c.id.in_(ids), r.c.status == INBOUND, r.c.lease_owner == node))]
    if not changed:
        return status
    conn.execute(r.update().where(r.c.id.in_(changed)).values(
        last_reply=reply, lease_owner=None, lease_until=None, updated_at=now, **values))
    detail = {POSTED: f"posted to the inbound webhook of {post.domain}",
              EXPIRED: f"the inbound webhook of {post.domain} failed for {max_age:g}s: given up",
              INBOUND: f"the inbound webhook of {post.domain} failed; retried later"}[status]
    add_events(conn, [{"account_id": post.account_id, "message_id": post.message_id, "recipient": addr,
                       "type": event, "detail": detail, "at": now, "attempt": post.attempt, "reply": reply}
                      for rid, addr in post.recipients if rid in set(changed)])
    return status


def due_count(conn: Connection) -> int:
    """Recipients waiting to be posted (for stats and tests)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(recipients)
                            .where(recipients.c.status == INBOUND)).scalar_one())


def _auth(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
