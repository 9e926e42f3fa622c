"""Operator actions on the queue, as postqueue -f / postsuper -d users expect: retry, delete, bounce;
for one message, or (retry, bounce) for every waiting recipient of one destination domain.

Each function runs inside the caller's transaction (`with engine.begin() as conn: ...`), so the
CLI can act while a server delivers from the same database: the change commits at once or not at
all, and the scheduler sees it at its next claim. `bounce_message` is `bounce` in a transaction of
its own, with what came of it (the DSN, recipients left alone), for the CLI and the operator API.

Hazard: a recipient with a live lease is being delivered right now, and the delivery agent will
write its outcome when the attempt ends. So `retry` leaves live leases alone (the recipient is
due right after that attempt if it defers), and `bounce` skips in-flight recipients rather than
bounce mail that may be accepted a second later (they stay pending). `delete` removes the
message regardless, as `postsuper -d` does; the agent's write for an in-flight attempt then
finds no message.

Lives in `delivery/`, not `spool/`, because `bounce` queues its DSN through
`delivery.outcomes.queue_bounce`, and imports point from delivery to spool, not back.

Exceptions: `NoSuchMessage(LookupError)` for an unknown queue id.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import (
    BOUNCED,
    EV_BOUNCE_QUEUED,
    EV_BOUNCED_BY_OPERATOR,
    EV_DELETED_BY_OPERATOR,
    EV_RETRIED_BY_OPERATOR,
    PENDING,
)
from mailrelay.delivery.dsn import FailedRecipient, notify_wants
from mailrelay.delivery.outcomes import queue_bounce
from mailrelay.spool.leases import Claim, ClaimedMessage, ClaimedRecipient
from mailrelay.spool.nodes import lease_free
from mailrelay.spool.reader import QueueReader
from mailrelay.spool.wakeups import notify
from mailrelay.store import bodies
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import attempts, message_categories, messages, recipients

BOUNCE_STATUS = "5.0.0"  # RFC 3463 §3.1: other or undefined permanent status
BOUNCE_TEXT = "bounced by the operator"


class NoSuchMessage(LookupError):
    """No message with this queue id (never queued, or already deleted)."""

    def __init__(self, queue_id: str) -> None:
        super().__init__(f"no message {queue_id[:40]} in the queue")
        self.queue_id = queue_id


def retry(conn: Connection, queue_id: str | None, *, now: float, domain: str | None = None) -> int:
    """Make pending recipients of one message (None: of all) due now, only those of
    destination `domain` if given; returns how many.

    Writes one "retried-by-operator" event per message that had pending recipients.
    """
    r = recipients
    where: list[sa.ColumnElement[bool]] = [r.c.status.in_(PENDING)]
    if queue_id is not None:
        _account_id(conn, queue_id)  # raises for an unknown id
        where.append(r.c.message_id == queue_id)
    if domain is not None:
        where.append(r.c.domain == domain)
    per_message = {row.message_id: int(row.n) for row in conn.execute(
        sa.select(r.c.message_id, sa.func.count().label("n")).where(*where).group_by(r.c.message_id))}
    if not per_message:
        return 0
    # Only leases nobody holds any more are cleared: a live one is an attempt in progress, and
    # a second claim beside it would deliver the message twice.
    live = sa.not_(lease_free(now))
    conn.execute(r.update().where(*where, sa.not_(live)).values(
        next_attempt_at=now, lease_owner=None, lease_until=None, updated_at=now))
    conn.execute(r.update().where(*where, live).values(next_attempt_at=now, updated_at=now))
    notify(conn)  # the delivering nodes claim them now, not at their next poll
    owners = dict(conn.execute(sa.select(messages.c.id, messages.c.account_id)
                               .where(messages.c.id.in_(sorted(per_message)))).all())
    add_events(conn, [
        {"account_id": owners.get(mid), "message_id": mid, "recipient": None, "type": EV_RETRIED_BY_OPERATOR,
         "detail": f"{n} recipient{'s' if n != 1 else ''} due now", "at": now}
        for mid, n in sorted(per_message.items())])
    return sum(per_message.values())


def delete(conn: Connection, queue_id: str, *, now: float) -> int:
    """Remove a message with its recipients and attempts; returns how many recipients it had.

    A "deleted-by-operator" event (account id, queue id, recipient statuses) stays behind.
    """
    account_id = _account_id(conn, queue_id)
    statuses = [s for (s,) in conn.execute(sa.select(recipients.c.status)
                                           .where(recipients.c.message_id == queue_id))]
    # Children first, explicitly: correct even on a connection without SQLite's foreign_keys
    # pragma, where ON DELETE CASCADE would silently do nothing.
    conn.execute(attempts.delete().where(attempts.c.message_id == queue_id))
    conn.execute(recipients.delete().where(recipients.c.message_id == queue_id))
    conn.execute(message_categories.delete().where(message_categories.c.message_id == queue_id))
    bodies.delete(conn, [queue_id])
    conn.execute(messages.delete().where(messages.c.id == queue_id))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(Counter(statuses).items())) or "no recipients"
    add_events(conn, [{"account_id": account_id, "message_id": queue_id, "recipient": None,
                       "type": EV_DELETED_BY_OPERATOR, "detail": summary, "at": now}])
    return len(statuses)


def bounce(conn: Connection, queue_id: str, *, now: float, hostname: str, domain: str | None = None) -> int:
    """Bounce every pending recipient not in flight (only those of destination `domain`, if
    given); returns how many.

    Each becomes `bounced` (attempt counts untouched) with a "bounced-by-operator" event, and
    one DSN about them all is queued to the sender: none for a null sender (RFC 3464 §2), and
    none for recipients whose RCPT NOTIFY (RFC 3461 §4.1) does not ask for failures.
    """
    m = conn.execute(sa.select(messages, *bodies.CONTENT_COLUMNS).select_from(bodies.with_content())
                     .where(messages.c.id == queue_id)).first()
    if m is None:
        raise NoSuchMessage(queue_id)
    r = recipients
    where = [r.c.message_id == queue_id, r.c.status.in_(PENDING), lease_free(now)]
    if domain is not None:
        where.append(r.c.domain == domain)
    # One statement decides and changes: a node claiming a recipient between a read and the
    # write would deliver what we report bounced.
    rows = sorted(conn.execute(r.update().where(*where).values(
        status=BOUNCED, last_reply=f"{BOUNCE_STATUS} {BOUNCE_TEXT}", next_attempt_at=None,
        lease_owner=None, lease_until=None, updated_at=now,
    ).returning(r.c.id, r.c.address, r.c.params, r.c.attempts, r.c.status)).all(), key=lambda row: row.id)
    if not rows:
        return 0
    ids = [row.id for row in rows]
    add_events(conn, [
        {"account_id": m.account_id, "message_id": queue_id, "recipient": row.address,
         "type": EV_BOUNCED_BY_OPERATOR, "detail": f"{BOUNCE_STATUS} {BOUNCE_TEXT}", "at": now}
        for row in rows])
    last_tried = dict(conn.execute(
        sa.select(attempts.c.recipient_id, sa.func.max(attempts.c.at))
        .where(attempts.c.recipient_id.in_(ids)).group_by(attempts.c.recipient_id)).all())
    claimed = [ClaimedRecipient(row.id, row.address, _json(row.params), row.attempts, row.status) for row in rows]
    failed = [FailedRecipient(c.address, BOUNCE_STATUS, "failed", BOUNCE_TEXT, None, last_tried.get(c.id))
              for c in claimed if notify_wants(_notify(c.params), "failed")]
    if failed:
        message = ClaimedMessage(m.id, m.account_id, m.mail_from, _json(m.mail_params),
                                 bodies.Content.of(m).data, m.created_at)
        claim = Claim(message, "", tuple(claimed))
        queue_bounce(conn, claim, failed, now=now, hostname=hostname, action_note=" (bounced by the operator)")
    return len(rows)


@dataclass(frozen=True, slots=True)
class Bounced:
    """What `bounce_message` did: for `queue bounce` and the operator API alike."""

    id: str
    recipients: int  # bounced now
    dsn: str | None  # queue id of the DSN to the sender; None: null sender, or NOTIFY asked for none
    in_delivery: int  # pending recipients left alone because an attempt is in progress


def bounce_message(engine: sa.Engine, queue_id: str, *, now: float, hostname: str) -> Bounced:
    """`bounce` in a transaction of its own, then what came of it (read back from the queue)."""
    with engine.begin() as conn:
        n = bounce(conn, queue_id, now=now, hostname=hostname)
    detail = QueueReader(engine).show(queue_id)
    dsn, busy = None, 0
    if detail is not None:
        dsn = next((e.detail.split()[1] for e in reversed(detail.events)
                    if e.type == EV_BOUNCE_QUEUED and e.at == now and len(e.detail.split()) > 1), None)
        busy = sum(1 for r in detail.recipients
                   if r.status in PENDING and r.lease_until is not None and r.lease_until >= now)
    return Bounced(queue_id, n, dsn, busy)


@dataclass(frozen=True, slots=True)
class DomainBounced:
    """What `bounce_domain` did."""

    domain: str
    recipients: int  # bounced now
    messages: int  # that many messages had one or more of them (each sender gets at most one DSN)
    in_delivery: int  # waiting recipients of the domain left alone: an attempt is in progress


BOUNCE_CHUNK = 100  # messages per transaction in bounce_domain: short write locks on SQLite


def bounce_domain(engine: sa.Engine, domain: str, *, now: float, hostname: str) -> DomainBounced:
    """`bounce` for every message with a waiting recipient of `domain`, only those recipients.

    A few messages per transaction, so a large domain neither holds the database's write lock
    for long nor loses everything to one failure; running it again bounces what is left."""
    r = recipients
    with engine.connect() as conn:
        ids = list(conn.execute(sa.select(r.c.message_id).where(r.c.domain == domain, r.c.status.in_(PENDING),
                                                                lease_free(now))
                                .group_by(r.c.message_id).order_by(r.c.message_id)).scalars())
    n = touched = 0
    for start in range(0, len(ids), BOUNCE_CHUNK):
        with engine.begin() as conn:
            for queue_id in ids[start:start + BOUNCE_CHUNK]:
                with contextlib.suppress(NoSuchMessage):  # deleted meanwhile
                    done = bounce(conn, queue_id, now=now, hostname=hostname, domain=domain)
                    n += done
                    touched += 1 if done else 0
    with engine.connect() as conn:
        busy = conn.execute(sa.select(sa.func.count()).select_from(r).where(
            r.c.domain == domain, r.c.status.in_(PENDING), sa.not_(lease_free(now)))).scalar_one()
    return DomainBounced(domain, n, touched, int(busy))


def _account_id(conn: Connection, queue_id: str) -> int:
    account_id = conn.execute(sa.select(messages.c.account_id).where(messages.c.id == queue_id)).scalar()
    if account_id is None:
        raise NoSuchMessage(queue_id)
    return int(account_id)


def _notify(params: dict[str, str | None]) -> str | None:
    # ESMTP keywords are case-insensitive (RFC 5321 §4.1.2); stored as received.
    return next((v for k, v in params.items() if k.upper() == "NOTIFY"), None)


def _json(text: str | None) -> dict[str, str | None]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
