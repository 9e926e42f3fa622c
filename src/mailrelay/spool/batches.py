"""Batches of scheduled sends (SendGrid's batch_id): paused or cancelled before they are sent.

The delivery agent's claim (spool.leases.claim_due) knows nothing of batches; a batch's state
is written onto its recipients instead, so the hot path stays one indexed query:

- pause: each recipient of the batch not yet attempted (queued, attempts 0, not leased) has
  HOLD added to its next_attempt_at: never due, and its real send time kept. Resuming takes
  HOLD off again: due at the time it was scheduled (or at once, if that has passed).
- cancel: those recipients end `dropped` (a final status, with a "dropped" event whose reason
  says the batch was cancelled), in one UPDATE; a recipient already attempted is left alone.

Each step is idempotent (a held recipient is recognised by next_attempt_at >= HOLD), and
`apply` runs in the same transaction as the insert of new mail carrying a batch_id (the spool
writer calls it), so mail queued into a paused or cancelled batch is held or dropped before
any node can claim it. The batch row is locked first (PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core import status
from mailrelay.spool.nodes import lease_free
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import mail_batches, messages, recipients

HOLD = 1e10  # seconds (about 317 years) added to a held recipient's next_attempt_at
PAUSE = "pause"
CANCEL = "cancel"
CANCELLED_REASON = "Cancelled batch"  # the dropped event's reason


def lock_status(conn: Connection, batch_id: str) -> tuple[int, str | None] | None:
    """(account id, status) of a batch, its row locked until the transaction ends; None if none."""
    query = sa.select(mail_batches.c.account_id, mail_batches.c.status).where(mail_batches.c.id == batch_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else (row.account_id, row.status)


def _waiting(batch_id: str, now: float) -> list[sa.ColumnElement[bool]]:
    r = recipients
    in_batch = r.c.message_id.in_(sa.select(messages.c.id).where(messages.c.batch_id == batch_id))
    return [in_batch, r.c.status == status.QUEUED, r.c.attempts == 0, lease_free(now)]


def hold(conn: Connection, batch_id: str, now: float) -> int:
    r = recipients
    result = conn.execute(r.update().where(*_waiting(batch_id, now), r.c.next_attempt_at < HOLD)
                          .values(next_attempt_at=r.c.next_attempt_at + HOLD, updated_at=now))
    return int(result.rowcount or 0)


def release(conn: Connection, batch_id: str, now: float) -> int:
    r = recipients
    result = conn.execute(r.update().where(*_waiting(batch_id, now), r.c.next_attempt_at >= HOLD)
                          .values(next_attempt_at=r.c.next_attempt_at - HOLD, updated_at=now))
    return int(result.rowcount or 0)


def drop(conn: Connection, batch_id: str, now: float) -> int:
    r = recipients
    rows = conn.execute(sa.select(r.c.id, r.c.message_id, r.c.address, messages.c.account_id)
                        .join(messages, messages.c.id == r.c.message_id).where(*_waiting(batch_id, now))).all()
    if not rows:
        return 0
    conn.execute(r.update().where(r.c.id.in_([row.id for row in rows]))
                 .values(status=status.DROPPED, last_reply=CANCELLED_REASON, next_attempt_at=None, lease_owner=None,
                         lease_until=None, updated_at=now))
    add_events(conn, [{"account_id": row.account_id, "message_id": row.message_id, "recipient": row.address,
                       "type": status.DROPPED, "at": now, "detail": CANCELLED_REASON} for row in rows])
    return len(rows)


def enforce(conn: Connection, batch_id: str, state: str | None, now: float) -> int:
    """Make the batch's waiting recipients match `state` (None: sent as scheduled)."""
    if state == CANCEL:
        return drop(conn, batch_id, now)
    if state == PAUSE:
        return hold(conn, batch_id, now)
    return release(conn, batch_id, now)


def apply(conn: Connection, batch_ids: Iterable[str], now: float) -> None:
    """New mail of these batches was just inserted: hold or drop it if its batch says so."""
    for batch_id in sorted(set(batch_ids)):
        found = lock_status(conn, batch_id)
        if found is not None and found[1] is not None:
            enforce(conn, batch_id, found[1], now)


def set_status(conn: Connection, account_id: int, batch_id: str, state: str | None, now: float) -> bool:
    """Pause, cancel or resume (None) the account's batch; False if it has no such batch.
    A cancelled batch's dropped recipients stay dropped when it is resumed."""
    found = lock_status(conn, batch_id)
    if found is None or found[0] != account_id:
        return False
    conn.execute(mail_batches.update().where(mail_batches.c.id == batch_id).values(status=state, updated_at=now))
    enforce(conn, batch_id, state, now)
    return True
