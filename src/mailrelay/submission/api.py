"""Mail handed over by the HTTP API: the same plan, quota, sender-domain and spool rules as SMTP
submission (mailrelay.submission.policy), applied to whole messages instead of SMTP commands.

A request is accepted whole or not at all: every message is checked (size, recipients per
message, From: domain), the plan's per-minute rate and daily/monthly limits are taken for all
its recipients at once, and the messages are committed together before the caller answers 202.
A refusal is a `Refusal` with the SMTP reply SMTP would give; the HTTP layer maps it. That
includes storage: below storage.min_free (plus the request's size) free, 452 4.3.1 as SMTP's
MAIL gets, and a commit the database could not take (disk full, database down) 451 4.3.0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from mailrelay import metrics
from mailrelay.accounts.service import Account
from mailrelay.core import reply as R
from mailrelay.core.dates import rfc5322_date
from mailrelay.core.ids import new_queue_id
from mailrelay.core.reply import Refusal
from mailrelay.quota.usage import Period, release, reserve
from mailrelay.sandbox.chaos import chaos_reply
from mailrelay.spool.writer import SpoolRecord
from mailrelay.store.health import StorageUnavailable
from mailrelay.store.space import DiskSpace
from mailrelay.submission.policy import SubmissionPolicy, exceeded

log = logging.getLogger("mailrelay.submission")

LISTENER = "http"  # messages.listener of mail that came through the API


@dataclass(frozen=True, slots=True)
class APIMessage:
    """One message to queue: its envelope and the RFC 5322 message (CRLF line ends)."""

    mail_from: str
    recipients: Sequence[str]
    body: bytes
    message_id: str | None = None
    subject: str | None = None
    tags: dict[str, Any] | None = None  # category / unique_args / x_message_id, onto events
    send_at: float | None = None  # not delivered before this time
    batch_id: str | None = None  # the account's batch (scheduled sends: pause, cancel)


class RateRefusal(Exception):
    """The plan's per-minute rate: `retry_after` seconds until the recipients fit."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"rate limit of {limit} emails a minute")
        self.limit = limit
        self.retry_after = retry_after


class APISubmission:
    def __init__(self, policy: SubmissionPolicy, *, space: DiskSpace | None = None) -> None:
        self.policy = policy
        self.space = space  # None: free space is not checked (PostgreSQL, storage.min_free = 0)

    async def submit(self, account: Account, messages: Sequence[APIMessage], *, client_ip: str,
                     auth_user: str, tls_version: str | None = None) -> list[str]:
        """Queue `messages` for `account`; their queue ids once committed. Raises Refusal (or
        RateRefusal) with nothing queued and nothing counted."""
        started = time.monotonic()
        p = self.policy
        plan = p.plans.get(account.plan)
        now = p.clock()
        if account.sandbox and account.chaos:
            failure = chaos_reply(account, "data")
            if failure is not None:
                raise Refusal(failure)
        for msg in messages:
            p.check_size(plan, len(msg.body))
            limit = plan.max_recipients_per_message
            if limit and len(msg.recipients) > limit:
                raise Refusal(R.TOO_MANY_RECIPIENTS.with_text(
                    f"Too many recipients: plan {plan.name} allows {limit} per message"))
            if p.sender_domains is not None:
                p.check_from_domain(account, msg.body)
        if self.space is not None and not self.space.room_for(sum(len(m.body) for m in messages)):
            raise Refusal(R.INSUFFICIENT_STORAGE)
        total = sum(len(m.recipients) for m in messages)
        taken = self._take_rate(account, plan.rate_per_minute, total, now)
        reserved = 0
        try:
            if plan.daily_limit or plan.monthly_limit:
                await self._reserve(account, total, plan.daily_limit, plan.monthly_limit, now)
                reserved = total
            records = [self._record(account, m, client_ip=client_ip, auth_user=auth_user,
                                    tls_version=tls_version, now=now, count_usage=not reserved)
                       for m in messages]
            ids = [r.queue_id for r in records]
            try:
                await p.writer.submit_many(records, ids)
            except StorageUnavailable:  # logged once per outage, by the writer
                raise Refusal(R.STORAGE_ERROR) from None
        except BaseException:
            for _ in range(taken):
                p.rate.give_back(account.id)
            if reserved:
                p.writer.run(lambda conn: release(conn, account.id, reserved, now))
            raise
        metrics.count(metrics.accepted, "http", account.plan, n=len(records))
        metrics.observe(metrics.accept_seconds, time.monotonic() - started, "http")
        for r in records:
            log.info("%s: queued from=<%s> nrcpt=%d size=%d account=%s client=%s via=http",
                     r.queue_id, r.mail_from, len(r.recipients), len(r.trace_headers) + len(r.body),
                     account.name, client_ip,
                     extra={"queue_id": r.queue_id, "event": "queued", "account": account.name,
                            "client_ip": client_ip, "via": "http"})
        return ids

    def _take_rate(self, account: Account, rate: int, n: int, now: float) -> int:
        if not rate:
            return 0
        for taken in range(n):
            wait = self.policy.rate.take(account.id, rate, now)
            if wait:
                for _ in range(taken):
                    self.policy.rate.give_back(account.id)
                raise RateRefusal(rate, wait + (n - taken - 1) * 60.0 / rate)
        return n

    async def _reserve(self, account: Account, n: int, daily: int, monthly: int, now: float) -> None:
        def op(conn: Connection) -> Period | None:
            return reserve(conn, account.id, n, daily_limit=daily, monthly_limit=monthly, now=now)

        try:
            refused = await self.policy.writer.run(op)
        except StorageUnavailable:
            raise Refusal(R.STORAGE_ERROR) from None
        if refused is not None:
            raise Refusal(exceeded(self.policy.plans.get(account.plan), refused, now))

    def _record(self, account: Account, msg: APIMessage, *, client_ip: str, auth_user: str,
                tls_version: str | None, now: float, count_usage: bool) -> SpoolRecord:
        queue_id = new_queue_id()
        host = self.policy.hostname
        # RFC 5321 §4.4: the trace line of the hop that took the message, here over HTTP.
        received = (f"Received: from [{client_ip}] by {host} (mailrelay) with HTTP{'S' if tls_version else ''}"
                    f" id {queue_id};\r\n\t{rfc5322_date(now)}\r\n").encode("ascii", "replace")
        return SpoolRecord(
            queue_id=queue_id, account_id=account.id, mail_from=msg.mail_from, mail_params={},
            recipients=[(r, {}) for r in msg.recipients], client_ip=client_ip, helo="",
            auth_user=auth_user, tls_version=tls_version, tls_cipher=None, listener=LISTENER,
            trace_headers=received, body=msg.body, created_at=now, message_id_header=msg.message_id,
            subject=msg.subject, tags=msg.tags, sandbox=account.sandbox,
            count_usage=len(msg.recipients) if count_usage else 0,
            not_before=msg.send_at if msg.send_at and msg.send_at > now else None, batch_id=msg.batch_id)
