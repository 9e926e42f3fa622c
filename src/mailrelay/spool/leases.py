"""Claiming due recipients, with leases, and giving leases back.

The next attempt time is written *before* an attempt starts (together with the lease), so a
node that dies mid-delivery leaves recipients that are simply due again later: never lost, and
never retried in a storm. On PostgreSQL several nodes claim side by side (`FOR UPDATE SKIP
LOCKED`); on SQLite the one writer thread serialises claims. The lease step (`due`,
`lock_due`, `take_leases`) is shared by delivery (`claim_due`) and received mail waiting for
its parse webhook (inbound.claims). Every `now` here is on the queue's clock (store.clock: the
database server's on PostgreSQL), so nodes whose clocks disagree agree on what is due.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import PENDING
from mailrelay.spool.nodes import lease_free
from mailrelay.store.bodies import CONTENT_COLUMNS, Content, with_content
from mailrelay.store.schema import accounts, messages, recipients


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    id: int
    address: str
    params: dict[str, str | None]
    attempts: int  # attempts made before this one
    status: str


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: str
    account_id: int
    mail_from: str
    mail_params: dict[str, str | None]
    data: bytes  # trace headers + body, exactly as stored
    created_at: float
    sandbox: bool = False  # a sandbox account's message: captured, not delivered
    # Suppression rules the message was sent with (the HTTP API's asm and bypass_* settings):
    # lists (suppression kinds, or "groups") not checked, and its unsubscribe group.
    bypass: frozenset[str] = frozenset()
    asm_group: int | None = None
    account: str = ""  # the account's name, for the log lines
    plan: str = ""  # the account's plan, for the metrics


@dataclass(frozen=True, slots=True)
class Claim:
    """Recipients of one message at one domain: one SMTP transaction."""

    message: ClaimedMessage
    domain: str
    recipients: tuple[ClaimedRecipient, ...]


def due(statuses: tuple[str, ...], now: float) -> list[sa.ColumnElement[bool]]:
    """Recipients in one of `statuses` whose next attempt time has come and nobody works on."""
    r = recipients
    status = r.c.status == statuses[0] if len(statuses) == 1 else r.c.status.in_(statuses)
    return [status, r.c.next_attempt_at <= now, lease_free(now)]


def lock_due(conn: Connection, query: sa.Select[Any]) -> sa.Select[Any]:
    """`query` locking the rows it reads; rows another node is claiming are skipped
    (PostgreSQL; SQLite's one writer thread serialises claims)."""
    return query.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else query


def take_leases(conn: Connection, rows: Iterable[Any], *, node: str, now: float, lease_seconds: float,
                next_attempt: Callable[[int], float]) -> None:
    """Lease `rows` (each with `id` and `attempts`, as read by the claim) to `node`, counting
    the attempt. The next attempt time first: if we die now, these are due again then, not before."""
    r = recipients
    by_attempts: dict[int, list[int]] = {}
    for row in rows:
        by_attempts.setdefault(row.attempts, []).append(row.id)
    for attempts, ids in by_attempts.items():
        conn.execute(
            r.update().where(r.c.id.in_(ids))
            .values(lease_owner=node, lease_until=now + lease_seconds,
                    next_attempt_at=now + next_attempt(attempts), attempts=attempts + 1, updated_at=now)
        )


def claim_due(conn: Connection, *, node: str, now: float, limit: int, lease_seconds: float,
              next_attempt: Callable[[int], float]) -> list[Claim]:
    """Lease up to `limit` due recipients to `node`; group them by (message, domain)."""
    r = recipients
    rows = conn.execute(lock_due(conn, (
        sa.select(r.c.id, r.c.message_id, r.c.address, r.c.domain, r.c.params, r.c.attempts, r.c.status)
        .where(*due(PENDING, now))
        .order_by(r.c.next_attempt_at, r.c.id)
        .limit(limit)
    ))).all()
    if not rows:
        return []
    take_leases(conn, rows, node=node, now=now, lease_seconds=lease_seconds, next_attempt=next_attempt)
    msgs = load_messages(conn, {row.message_id for row in rows})
    groups: dict[tuple[str, str], list[ClaimedRecipient]] = {}
    for row in rows:
        groups.setdefault((row.message_id, row.domain), []).append(
            ClaimedRecipient(row.id, row.address, _json(row.params), row.attempts, row.status))
    return [Claim(msgs[mid], domain, tuple(rcpts)) for (mid, domain), rcpts in groups.items() if mid in msgs]


def _json(text: Any) -> dict[str, str | None]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def load_messages(conn: Connection, ids: Iterable[str]) -> dict[str, ClaimedMessage]:
    """The messages with these queue ids, as a delivery attempt needs them."""
    m = messages.c
    return {
        row.id: ClaimedMessage(row.id, row.account_id, row.mail_from, _json(row.mail_params),
                               Content.of(row).data, row.created_at, bool(row.sandbox),
                               *_rules(row.tags), account=row.name or "", plan=row.plan or "")
        for row in conn.execute(sa.select(m.id, m.account_id, m.mail_from, m.mail_params, *CONTENT_COLUMNS,
                                          m.created_at, m.sandbox, m.tags, accounts.c.name, accounts.c.plan)
                                .select_from(with_content(messages.outerjoin(accounts, accounts.c.id == m.account_id)))
                                .where(m.id.in_(sorted(set(ids)))))
    }


def _rules(tags: str | None) -> tuple[frozenset[str], int | None]:
    """(bypass, asm_group) from a message's stored tags; none for SMTP mail."""
    if not tags or ("bypass" not in tags and "asm_group_id" not in tags):
        return frozenset(), None
    try:
        data: Any = json.loads(tags)
    except ValueError:
        return frozenset(), None
    if not isinstance(data, dict):
        return frozenset(), None
    group = data.get("asm_group_id")
    skipped = data.get("bypass")
    return (frozenset(str(k) for k in skipped) if isinstance(skipped, list) else frozenset(),
            group if isinstance(group, int) else None)


def hand_back(conn: Connection, *, node: str, ids: list[int], now: float) -> int:
    """Recipients claimed but never attempted (the node is stopping): due now, and the attempt
    counted at the claim is taken back. Only those `node` still leases."""
    r = recipients
    result = conn.execute(
        r.update().where(r.c.id.in_(ids), r.c.lease_owner == node, r.c.status.in_(PENDING))
        .values(lease_owner=None, lease_until=None, next_attempt_at=now, attempts=r.c.attempts - 1, updated_at=now))
    return int(result.rowcount or 0)


def hand_back_unknown(conn: Connection, *, node: str, keep: Iterable[int], now: float) -> int:
    """Recipients leased to `node` that it does not know it holds (not in `keep`): a claim whose
    commit went through with its answer lost (the database crashed in between). Never
    attempted: due now, and the attempt counted at the claim taken back. Without this they
    stayed leased to a live node, whose lease only its stop or death ends."""
    r = recipients
    kept = sorted(set(keep))
    query = r.update().where(r.c.lease_owner == node, r.c.status.in_(PENDING))
    if kept:
        query = query.where(r.c.id.not_in(kept))
    result = conn.execute(query.values(lease_owner=None, lease_until=None, next_attempt_at=now,
                                       attempts=r.c.attempts - 1, updated_at=now))
    return int(result.rowcount or 0)
