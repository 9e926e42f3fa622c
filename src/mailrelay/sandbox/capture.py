"""Capturing a sandbox account's claimed recipients instead of delivering them.

Runs inside the spool writer's transaction, like `delivery.outcomes.record_many`, for all the
captures of one delivery-loop iteration at once: a few bulk statements, whatever their number.
The message itself is never rewritten; the DKIM-Signature fields made at capture time are kept
beside it (`messages.signature`), so `inbox raw` shows exactly what would have been sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core.status import CAPTURED
from mailrelay.spool.leases import Claim
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import messages, recipients

CAPTURED_REPLY = "captured by the sandbox, not delivered"

# A capture is not a delivery attempt: the attempt count goes back to its value before the
# claim, so that a released message starts its real delivery at attempt 1.
_SET_CAPTURED = recipients.update().where(recipients.c.id == sa.bindparam("rid")).values(
    status=CAPTURED, last_reply=CAPTURED_REPLY, attempts=sa.bindparam("tries"), updated_at=sa.bindparam("now"),
    lease_owner=None, lease_until=None, next_attempt_at=None)
# A message to several domains is claimed (and signed) once per domain: the first signature stays.
_SET_SIGNATURE = messages.update().where(messages.c.id == sa.bindparam("mid"), messages.c.signature.is_(None)).values(
    signature=sa.bindparam("sig"))


def record_captures(conn: Connection, items: Sequence[tuple[Claim, bytes]], *, now: float) -> None:
    """Mark the recipients of each claim `captured` (one event each) and keep its signature."""
    rcpt_rows: list[dict[str, object]] = []
    sig_rows: list[dict[str, object]] = []
    event_rows: list[dict[str, object]] = []
    for claim, signature in items:
        msg = claim.message
        if signature:
            sig_rows.append({"mid": msg.id, "sig": signature})
        for r in claim.recipients:
            rcpt_rows.append({"rid": r.id, "tries": r.attempts, "now": now})
            event_rows.append({"account_id": msg.account_id, "message_id": msg.id, "recipient": r.address,
                               "type": CAPTURED, "detail": "sandbox: " + ("DKIM-signed, " if signature else "")
                               + "kept for `mailrelay inbox`", "at": now})
    if rcpt_rows:
        conn.execute(_SET_CAPTURED, rcpt_rows)
    if sig_rows:
        conn.execute(_SET_SIGNATURE, sig_rows)
    add_events(conn, event_rows)
