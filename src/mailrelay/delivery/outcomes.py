"""Writing down what happened to recipients: status, attempt, event, suppression and bounce.

Runs inside the spool writer's transaction (`SpoolWriter.run`), so a delivered recipient, its
attempt row and its event commit together; the only window in which a remote 250 can be lost is
between that reply and this commit. A bounce (RFC 3464 DSN) is queued as a new message from the
null sender in the same transaction, and never for a message that itself had a null sender.

One bounce per message per delivery pass, as Postfix sends: a failed recipient waits in
`dsn_pending` while another recipient of its message is still being delivered (leased, e.g.
at another domain), and whoever records the last of them queues one DSN listing them all.
On PostgreSQL the message row is locked first, so two nodes finishing the same message at
once cannot both leave the report to the other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay import metrics
from mailrelay.accounts.suppressions import GROUPS, SuppressionService
from mailrelay.core.dates import rfc5322_date
from mailrelay.core.headers import header_section
from mailrelay.core.ids import new_queue_id
from mailrelay.core.status import (
    BOUNCED,
    DEFERRED,
    DROPPED,
    EV_BOUNCE_QUEUED,
    EV_DELAY_WARNING,
    EV_SUPPRESSION_ADDED,
    EXPIRED,
    FINAL,
)
from mailrelay.delivery import providers
from mailrelay.delivery.classify import Verdict, is_hard_bounce
from mailrelay.delivery.dsn import FailedRecipient, build_dsn, should_send_dsn
from mailrelay.spool.leases import Claim, ClaimedRecipient, load_messages
from mailrelay.spool.schedule import expired, warn_delay
from mailrelay.spool.writer import SpoolRecord
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import (
    asm_groups,
    asm_suppressions,
    attempts,
    events,
    message_bodies,
    messages,
    recipients,
    suppressions,
)


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    recipient: ClaimedRecipient
    verdict: Verdict
    host: str | None = None
    ip: str | None = None
    tls: str | None = None


def record_outcomes(conn: Connection, claim: Claim, outcomes: Sequence[RecipientOutcome], *, now: float,
                    hostname: str, max_lifetime: float, delay_warning: float = 0.0) -> str | None:
    """Store the outcome of one attempt; returns the queue id of a bounce it queued, if any."""
    return record_many(conn, [(claim, outcomes)], now=now, hostname=hostname, max_lifetime=max_lifetime,
                       delay_warning=delay_warning)[0]


# One statement each, run with executemany for a whole batch of outcomes: a final status also
# clears the next attempt time; a deferral keeps the one written when the recipient was claimed.
_SET_FINAL = recipients.update().where(recipients.c.id == sa.bindparam("rid")).values(
    status=sa.bindparam("st"), last_reply=sa.bindparam("reply"), updated_at=sa.bindparam("now"),
    lease_owner=None, lease_until=None, next_attempt_at=None, dsn_pending=sa.bindparam("dsn"))
_SET_OPEN = recipients.update().where(recipients.c.id == sa.bindparam("rid")).values(
    status=sa.bindparam("st"), last_reply=sa.bindparam("reply"), updated_at=sa.bindparam("now"),
    lease_owner=None, lease_until=None)


def record_many(conn: Connection, items: Sequence[tuple[Claim, Sequence[RecipientOutcome]]], *, now: float,
                hostname: str, max_lifetime: float, delay_warning: float = 0.0) -> list[str | None]:
    """Store the outcomes of several attempts in a few bulk statements; per item, the queue id
    of the bounce it queued, if any."""
    final_rows: list[dict[str, object]] = []
    open_rows: list[dict[str, object]] = []
    attempt_rows: list[dict[str, object]] = []
    event_rows: list[dict[str, object]] = []
    reports: list[tuple[Claim, list[FailedRecipient], list[FailedRecipient]]] = []
    for claim, outcomes in items:
        msg = claim.message
        failed: list[FailedRecipient] = []
        delayed: list[FailedRecipient] = []
        for out in outcomes:
            failures_before = len(failed)
            v = out.verdict
            status: str = v.outcome
            reply = v.diagnostic if v.remote else f"{v.status} {v.diagnostic}"
            if status == DEFERRED and expired(msg.created_at, now, max_lifetime):
                status = EXPIRED
                failed.append(FailedRecipient(out.recipient.address, "4.4.7", "failed",
                                              f"message expired after {max_lifetime / 86400:g} days; last error: "
                                              f"{v.diagnostic}", _remote(out), now))
            elif status == DEFERRED and warn_delay(msg.created_at, now, delay_warning) \
                    and not _warned(conn, msg.id, out.recipient.address):
                delayed.append(FailedRecipient(out.recipient.address, v.status, "delayed", v.diagnostic,
                                               _remote(out), now))
            elif status == BOUNCED:
                failed.append(FailedRecipient(out.recipient.address, v.status, "failed",
                                              v.diagnostic, _remote(out), now))
                if is_hard_bounce(v):
                    _suppress(conn, msg.account_id, out.recipient.address, v.diagnostic, now)
            row: dict[str, object] = {"rid": out.recipient.id, "st": status, "reply": reply, "now": now}
            if status in FINAL:
                row["dsn"] = (json.dumps(dataclasses.asdict(failed[-1])) if len(failed) > failures_before
                              and should_send_dsn(msg.mail_from) else None)
                final_rows.append(row)
            else:
                open_rows.append(row)
            attempt_rows.append({"message_id": msg.id, "recipient_id": out.recipient.id, "at": now,
                                 "mx_host": out.host, "ip": out.ip, "tls": out.tls, "reply": reply,
                                 "outcome": v.outcome})
            event_rows.append({"account_id": msg.account_id, "message_id": msg.id,
                               "recipient": out.recipient.address, "type": status,
                               "detail": f"{reply} ({out.host}[{out.ip}])" if out.host else reply, "at": now,
                               "attempt": out.recipient.attempts + 1, "reply": reply, "mx_host": out.host})
        reports.append((claim, failed, delayed))
    if final_rows:
        conn.execute(_SET_FINAL, final_rows)
    if open_rows:
        conn.execute(_SET_OPEN, open_rows)
    if attempt_rows:
        conn.execute(attempts.insert(), attempt_rows)
    add_events(conn, event_rows)
    sent = _report_failures(conn, {claim.message.id: claim for claim, _ in items}, now=now, hostname=hostname)
    bounces: list[str | None] = []
    for claim, _failed, delayed in reports:
        bounces.append(sent.pop(claim.message.id, None))
        if delayed and queue_bounce(conn, claim, delayed, now=now, hostname=hostname, action_note=" (delayed)"):
            add_events(conn, [
                {"account_id": claim.message.account_id, "message_id": claim.message.id, "recipient": d.address,
                 "type": EV_DELAY_WARNING, "detail": d.diagnostic or "", "at": now} for d in delayed])
    return bounces


def _report_failures(conn: Connection, claims: dict[str, Claim], *, now: float, hostname: str) -> dict[str, str]:
    """Queue one DSN per message whose failed recipients wait and none of whose recipients is
    still being delivered; returns the bounce queue id by message id."""
    r = recipients
    ids = sorted(claims)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(messages.c.id).where(messages.c.id.in_(ids)).order_by(messages.c.id).with_for_update())
    waiting = {row.message_id for row in conn.execute(
        sa.select(r.c.message_id).where(r.c.message_id.in_(ids), r.c.dsn_pending.is_not(None)).distinct())}
    if not waiting:
        return {}
    busy = {row.message_id for row in conn.execute(
        sa.select(r.c.message_id).where(r.c.message_id.in_(sorted(waiting)), r.c.lease_owner.is_not(None)).distinct())}
    sent: dict[str, str] = {}
    for message_id in sorted(waiting - busy):
        rows = conn.execute(sa.select(r.c.id, r.c.dsn_pending).where(
            r.c.message_id == message_id, r.c.dsn_pending.is_not(None)).order_by(r.c.id)).all()
        failed = [FailedRecipient(**json.loads(row.dsn_pending)) for row in rows]
        conn.execute(r.update().where(r.c.id.in_([row.id for row in rows])).values(dsn_pending=None))
        bounce = queue_bounce(conn, claims[message_id], failed, now=now, hostname=hostname)
        if bounce is not None:
            sent[message_id] = bounce
    return sent


def report_waiting_failures(conn: Connection, *, now: float, hostname: str, limit: int = 100) -> int:
    """The sweep behind `_report_failures`: failed recipients still waiting for their bounce
    although nothing of their message is being delivered any more (the recipient they waited
    for was handed back, dropped as suppressed, or bounced by an operator). Returns the
    number of bounces queued."""
    r = recipients
    waiting = [row.message_id for row in conn.execute(
        sa.select(r.c.message_id).where(r.c.dsn_pending.is_not(None)).distinct().limit(limit))]
    if not waiting:
        return 0
    claims = {mid: Claim(msg, "", ()) for mid, msg in load_messages(conn, waiting).items()}
    return len(_report_failures(conn, claims, now=now, hostname=hostname))


def _warned(conn: Connection, message_id: str, address: str) -> bool:
    """A "delayed" DSN goes out once per recipient (RFC 3464 §2.3.3 Action: delayed)."""
    return conn.execute(sa.select(events.c.id).where(
        events.c.message_id == message_id, events.c.recipient == address,
        events.c.type == EV_DELAY_WARNING).limit(1)).first() is not None


def record_dropped(conn: Connection, claim: Claim, dropped: Iterable[ClaimedRecipient], *, now: float) -> None:
    """Suppressed addresses are not sent to: they end `dropped`, with an event saying why."""
    for rcpt in dropped:
        conn.execute(recipients.update().where(recipients.c.id == rcpt.id).values(
            status=DROPPED, last_reply="suppressed: address is on the account's suppression list",
            updated_at=now, lease_owner=None, lease_until=None, next_attempt_at=None))
        add_events(conn, [{"account_id": claim.message.account_id, "message_id": claim.message.id,
                           "recipient": rcpt.address, "type": DROPPED,
                           "detail": "address is on the suppression list", "at": now}])


def suppressed_in(conn: Connection, account_id: int, addresses: Iterable[str]) -> dict[str, str]:
    """The account's suppressed ones of `addresses`, lower-cased, with their list (kind)."""
    lowered = {a.lower() for a in addresses}
    if not lowered:
        return {}
    rows = conn.execute(sa.select(suppressions.c.address, suppressions.c.kind).where(
        suppressions.c.account_id == account_id, suppressions.c.address.in_(lowered)))
    return {r.address: r.kind for r in rows}


def _left_groups(conn: Connection, account_id: int, groups: set[int], addresses: set[str]) -> set[tuple[int, str]]:
    """(group, address) pairs of the account's unsubscribe groups that these addresses left."""
    rows = conn.execute(sa.select(asm_suppressions.c.group_id, asm_suppressions.c.address)
                        .join(asm_groups, asm_groups.c.id == asm_suppressions.c.group_id)
                        .where(asm_groups.c.account_id == account_id, asm_suppressions.c.group_id.in_(groups),
                               asm_suppressions.c.address.in_(addresses)))
    return {(r.group_id, r.address) for r in rows}


def filter_suppressed(conn: Connection, claims: Sequence[Claim], *, now: float) -> list[Claim]:
    """Claims without their suppressed recipients (those end `dropped`): one query per account,
    and one more for the accounts whose messages name an unsubscribe group. A message sent with
    SendGrid's bypass_* settings skips the lists they name."""
    by_account: dict[int, set[str]] = {}
    groups: dict[int, set[int]] = {}
    for claim in claims:
        lowered = {r.address.lower() for r in claim.recipients}
        by_account.setdefault(claim.message.account_id, set()).update(lowered)
        if claim.message.asm_group is not None and GROUPS not in claim.message.bypass:
            groups.setdefault(claim.message.account_id, set()).add(claim.message.asm_group)
    listed = {account: found for account, addresses in by_account.items()
              if (found := suppressed_in(conn, account, addresses))}
    left = {account: pairs for account, ids in groups.items()
            if (pairs := _left_groups(conn, account, ids, by_account[account]))}
    if not listed and not left:
        return list(claims)
    out = []
    for claim in claims:
        msg = claim.message
        kinds = listed.get(msg.account_id, {})
        gone = left.get(msg.account_id, set())
        dropped = [r for r in claim.recipients
                   if (r.address.lower() in kinds and kinds[r.address.lower()] not in msg.bypass)
                   or (msg.asm_group, r.address.lower()) in gone]
        if not dropped:
            out.append(claim)
            continue
        record_dropped(conn, claim, dropped, now=now)
        metrics.count(metrics.recipients, "dropped", msg.plan, providers.NONE, n=len(dropped))
        rest = tuple(r for r in claim.recipients if r not in dropped)
        if rest:
            out.append(Claim(claim.message, claim.domain, rest))
    return out


def _suppress(conn: Connection, account_id: int, address: str, reason: str, now: float) -> None:
    # Insert-if-absent: two bounces of one address at once must not abort the transaction.
    if SuppressionService.add_from_bounce(conn, account_id, address, reason[:500], now):
        add_events(conn, [{"account_id": account_id, "recipient": address.lower(), "type": EV_SUPPRESSION_ADDED,
                           "detail": reason[:500], "at": now}])


def _remote(out: RecipientOutcome) -> str | None:
    return out.host if out.verdict.remote else None


def queue_bounce(conn: Connection, claim: Claim, failed: Sequence[FailedRecipient], *, now: float,
                 hostname: str, action_note: str = "") -> str | None:
    """Queue one DSN for `failed` recipients of the claimed message; None for a null sender."""
    msg = claim.message
    if not should_send_dsn(msg.mail_from):
        return None
    queue_id = new_queue_id()
    body = build_dsn(reporting_mta=hostname, original_sender=msg.mail_from, original_queue_id=msg.id,
                     arrival=msg.created_at, recipients=failed, original_headers=header_section(msg.data),
                     now=now, message_id_domain=hostname)
    trace = f"Received: by {hostname} (mailrelay) id {queue_id};\r\n\t{rfc5322_date(now)}\r\n".encode()
    record = SpoolRecord(queue_id=queue_id, account_id=msg.account_id, mail_from="", mail_params={},
                         recipients=[(msg.mail_from, {})], client_ip="127.0.0.1", helo=hostname,
                         auth_user=None, tls_version=None, tls_cipher=None, listener="bounce",
                         trace_headers=trace, body=body, created_at=now, processed_event=False)
    m, b, r = record.rows()
    conn.execute(messages.insert(), [m])
    conn.execute(message_bodies.insert(), [b])
    conn.execute(recipients.insert(), r)
    add_events(conn, [{"account_id": msg.account_id, "message_id": msg.id, "recipient": msg.mail_from,
                       "type": EV_BOUNCE_QUEUED, "detail": f"DSN {queue_id}{action_note}", "at": now}])
    return queue_id
