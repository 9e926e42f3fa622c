"""Who may send through us, and how an accepted message enters the spool.

Security: mailrelay is never an open relay. Mail is sent only by a logged-in account or from a
listener's trusted networks (as the configured trusted account); mailrelay.router gives every
other session to the inbound policy (mail for our own domains only), and this policy too
answers 554 5.7.1 to any recipient of such a session, whatever its syntax (percent hacks,
source routes, bang paths and quoted local parts route nowhere special here).

Plans: every recipient is one email. Accounts with a daily or monthly limit reserve each one
at RCPT, in the database (see mailrelay.quota.usage.reserve), so the count is exact across
sessions and nodes; the RCPT that would pass a limit gets 451 4.7.1, as SendGrid answers, and
the recipients before it stay accepted. Accounts without such a limit are counted in the
message's own transaction instead, which costs no extra commit. The plan is the one the
account had when it logged in (trusted networks: when its account was last looked up, at
most `cache_seconds` before a MAIL; EHLO's SIZE uses the last look-up, however old).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from mailrelay import metrics
from mailrelay.accounts.service import Account, AccountService
from mailrelay.core import reply as R
from mailrelay.core.address import Path
from mailrelay.core.headers import MAX_FROM, from_domains, from_field
from mailrelay.core.ids import new_queue_id
from mailrelay.core.reply import Refusal, Reply
from mailrelay.quota.plans import Plans
from mailrelay.quota.rate import RateLimiter
from mailrelay.quota.usage import Period, day_period, day_reset, month_reset, release, reserve
from mailrelay.sandbox.chaos import chaos_reply
from mailrelay.settings import DEFAULT_PLANS, PlanSettings
from mailrelay.smtp.handler import Identity, Session, Transaction, relay_denied
from mailrelay.smtp.trace import trace_headers
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store.health import StorageUnavailable, describe, is_unavailable
from mailrelay.submission import smtpapi

log = logging.getLogger("mailrelay.submission")

TRUSTED_ACCOUNT_UNAVAILABLE = Reply(451, "4.3.5", "Trusted-network account unavailable, try again later")
# RFC 3463 §3.8 X.7.1: delivery not authorized (SendGrid answers "451 ... Maximum credits exceeded").
QUOTA_EXCEEDED = Reply(451, "4.7.1", "Maximum credits exceeded")
RATE_EXCEEDED = Reply(451, "4.7.1", "Rate limit exceeded")


@dataclass(slots=True)
class Held:
    """What a transaction reserved at RCPT: emails counted per UTC day, with a time in it
    (a transaction can span midnight; each reservation is given back to its own day)."""

    account_id: int
    by_day: dict[str, tuple[float, int]] = field(default_factory=dict)

    def add(self, now: float) -> None:
        day = day_period(now)
        at, n = self.by_day.get(day, (now, 0))
        self.by_day[day] = (at, n + 1)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_day.values())

    def release(self, conn: Connection) -> None:
        for at, n in self.by_day.values():
            release(conn, self.account_id, n, at)


class SubmissionPolicy:
    """The Handler for sessions that send (see mailrelay.smtp.handler.Handler): logged in, or
    from a trusted network. mailrelay.router.PolicyRouter hands it those sessions."""

    def __init__(self, *, hostname: str, accounts: AccountService, writer: SpoolWriter,
                 trusted_account: str = "", executor: Executor | None = None,
                 cache_seconds: float = 30.0, sender_domains: SenderDomains | None = None,
                 plans: Sequence[PlanSettings] = (), default_plan: str = "free",
                 clock: Callable[[], float] = time.time) -> None:
        self.hostname = hostname
        self.accounts = accounts
        self.writer = writer
        self.trusted_account = trusted_account
        self.executor = executor
        self.cache_seconds = cache_seconds
        self.sender_domains = sender_domains  # None: any From: domain may be used
        self._trusted: tuple[Account | None, float] = (None, 0.0)
        self._trusted_failing = False  # the last read of the trusted account met an outage
        self.plans = Plans(plans or [PlanSettings(n, **v) for n, v in DEFAULT_PLANS.items()], default_plan)
        self.clock = clock  # wall time: days and months are UTC calendar periods; tests set it
        self.rate = RateLimiter()

    async def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        loop = asyncio.get_running_loop()
        try:
            account = await loop.run_in_executor(self.executor, self.accounts.authenticate, username, password)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Not a wrong password: RFC 4954 §6's temporary failure, not counted against the
            # client; the outage is one line of the writer's health, not a traceback per AUTH.
            self.writer.health.failed(exc)
            raise Refusal(R.AUTH_TEMP_FAIL) from None
        return Identity(username, account) if account is not None else None

    def _trusted_principal(self) -> Account | None:
        account, expires = self._trusted
        now = time.monotonic()
        if now >= expires:
            try:
                account = self.accounts.get(self.trusted_account) if self.trusted_account else None
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database is away: go on with the account as last seen (the commit at the
                # end of DATA decides anyway), or answer 451 when it was never seen. No
                # traceback, and one line per outage, not one per MAIL.
                if not self._trusted_failing:
                    log.warning("trusted network account %r cannot be read (%s); %s", self.trusted_account,
                                describe(exc), "using it as last read" if account else "MAIL is answered 451")
                self._trusted_failing = True
                self._trusted = (account, now + min(1.0, self.cache_seconds))
                if account is None:
                    raise Refusal(R.STORAGE_ERROR) from None
                return account
            if self._trusted_failing:
                log.warning("trusted network account %r can be read again", self.trusted_account)
                self._trusted_failing = False
            if account is not None and account.status != "active":
                account = None
            self._trusted = (account, now + self.cache_seconds)
        return account

    def sender_account(self, session: Session) -> Account | None:
        if session.identity is not None:
            principal: Any = session.identity.principal
            return principal if isinstance(principal, Account) else None
        if session.trusted:
            return self._trusted_principal()
        return None

    def max_message_size(self, session: Session) -> int | None:
        """The sending account's plan limit, announced in EHLO (after AUTH, or from a trusted
        network); MAIL SIZE= and the end of DATA check it either way.

        Only what is known already, never a database read: EHLO runs on the event loop, where
        a read would stall every session (up to storage.connect_timeout for a silent server)
        and fail each EHLO during an outage. From a trusted network that is its account as
        last looked up (at MAIL), however old; before the first look-up, the server's SIZE.
        """
        if session.identity is not None:
            account = self.sender_account(session)
        elif session.trusted:
            account = self._trusted[0]
        else:
            account = None
        return (self.plans.get(account.plan).max_message_size or None) if account is not None else None

    def check_sender(self, session: Session, txn: Transaction) -> None:
        if session.identity is None and session.trusted and self.sender_account(session) is None:
            log.error("trusted network mail refused: account %r missing or disabled", self.trusted_account)
            raise Refusal(TRUSTED_ACCOUNT_UNAVAILABLE)
        account = self.sender_account(session)
        if account is not None and txn.declared_size is not None:
            self.check_size(self.plans.get(account.plan), txn.declared_size)

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        if session.identity is None and not session.trusted:
            raise relay_denied(session, rcpt)  # not a sender: nothing is relayed for it
        account = self.sender_account(session)
        if account is not None and account.sandbox and account.chaos:
            failure = chaos_reply(account, "rcpt")
            if failure is not None:
                raise Refusal(failure)
        return self._check_plan(txn, account) if account is not None else None

    def _check_plan(self, txn: Transaction, account: Account) -> Awaitable[None] | None:
        plan = self.plans.get(account.plan)
        limit = plan.max_recipients_per_message
        if limit and len(txn.recipients) >= limit:
            # RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
            raise Refusal(R.TOO_MANY_RECIPIENTS.with_text(
                f"Too many recipients: plan {plan.name} allows {limit} per message"))
        now = self.clock()
        if plan.rate_per_minute:
            wait = self.rate.take(account.id, plan.rate_per_minute, now)
            if wait:
                seconds = max(1, round(wait))
                raise Refusal(RATE_EXCEEDED.with_text(
                    f"Rate limit exceeded: plan {plan.name} allows {plan.rate_per_minute} emails "
                    f"a minute; try again in {seconds} second{'s' if seconds > 1 else ''}"))
        if plan.daily_limit or plan.monthly_limit:
            return self._reserve(txn, account, plan, now)
        return None

    async def _reserve(self, txn: Transaction, account: Account, plan: PlanSettings, now: float) -> None:
        """Count this recipient now, in the next group commit, if the plan's limits allow it.

        A reservation is committed before the 250 to RCPT. If the process dies before DATA
        completes, it is never given back: the count stays higher than what was sent, which
        errs on the safe side (an account can lose a few emails of its day, never pass it).
        """
        def op(conn: Connection) -> Period | None:
            return reserve(conn, account.id, 1, daily_limit=plan.daily_limit,
                           monthly_limit=plan.monthly_limit, now=now)

        try:
            refused = await self.writer.run(op)
        except Exception as exc:
            self.rate.give_back(account.id)
            if not isinstance(exc, StorageUnavailable):  # an outage is logged once, by the writer
                log.error("quota reservation for account %s failed: %s", account.name, exc)
            raise Refusal(R.STORAGE_ERROR) from None
        if refused is not None:
            self.rate.give_back(account.id)
            raise Refusal(exceeded(plan, refused, now))
        held = txn.hold if isinstance(txn.hold, Held) else Held(account.id)
        held.add(now)
        txn.hold = held

    def abandon(self, session: Session, txn: Transaction) -> None:
        # May come twice for one transaction (a client gone while a reservation was in
        # flight): what is given back is taken off the transaction first.
        held, txn.hold = txn.hold, None
        if isinstance(held, Held) and held.total:
            self.writer.run(held.release).add_done_callback(
                functools.partial(_log_release, held))

    def check_size(self, plan: PlanSettings, size: int) -> None:
        if plan.max_message_size and size > plan.max_message_size:
            raise Refusal(R.MESSAGE_TOO_BIG.with_text(
                f"Message size exceeds fixed maximum message size: plan {plan.name} allows "
                f"{plan.max_message_size} bytes"))

    def check_from_domain(self, account: Account, body: bytes) -> None:
        """submission.require_own_domain: From: must be the account's own, verified domain
        (SendGrid's sender authentication); otherwise anyone could send as anyone's domain."""
        assert self.sender_domains is not None
        if self.sender_domains.signing_domain(account.id, body) is None:
            value = from_field(body)
            if value is not None and len(value) > MAX_FROM:
                # Not parsed (see core.headers.MAX_FROM): answered at once, whatever its size.
                raise Refusal(Reply(550, "5.7.1", f"From: field too long ({len(value)} octets, at most "
                                    f"{MAX_FROM}); its sender domain cannot be checked"))
            found = from_domains(body)
            what = f"From: domain {found[0]}" if found else "a message without a From: address we can read"
            raise Refusal(Reply(550, "5.7.1", f"{what} is not a verified sender domain of account "
                                f"{account.name}; add it with `mailrelay domain add` and verify it with "
                                "`mailrelay domain verify`"))

    def accept(self, session: Session, txn: Transaction, body: bytes) -> Awaitable[Reply]:
        ended = time.monotonic()
        account = self.sender_account(session)
        if account is None:  # the account went away between MAIL and DATA
            raise Refusal(TRUSTED_ACCOUNT_UNAVAILABLE)
        if account.sandbox and account.chaos:
            failure = chaos_reply(account, "data")
            if failure is not None:
                raise Refusal(failure)
        self.check_size(self.plans.get(account.plan), len(body))
        inspected = smtpapi.inspect(body)
        body = inspected.body
        if self.sender_domains is not None:
            self.check_from_domain(account, body)
        queue_id = new_queue_id()
        now = self.clock()
        # Recipients reserved at RCPT are counted already; the others now, with the message
        # (a transaction can have both: its account's plan changed between two RCPTs).
        reserved = txn.hold.total if isinstance(txn.hold, Held) else 0
        record = SpoolRecord(
            queue_id=queue_id,
            account_id=account.id,
            mail_from=txn.sender.address,
            mail_params=dict(txn.sender.params),
            recipients=[(r.address, dict(r.params)) for r in txn.recipients],
            client_ip=session.peer_ip,
            helo=session.helo,
            auth_user=session.identity.username if session.identity else None,
            tls_version=session.tls_version,
            tls_cipher=session.tls_cipher,
            listener=session.listener,
            trace_headers=trace_headers(session, txn, body, hostname=self.hostname,
                                        queue_id=queue_id, now=now),
            body=body,
            created_at=now,
            message_id_header=inspected.message_id,
            subject=inspected.subject,
            tags=inspected.tags,
            sandbox=account.sandbox,
            count_usage=len(txn.recipients) - reserved,
        )
        fut = self.writer.submit(record, R.OK.with_text(f"Ok: queued as {queue_id}"))
        fut.add_done_callback(functools.partial(_count_queued, account.plan, record.tls_version, ended))
        if log.isEnabledFor(logging.INFO):
            fut.add_done_callback(functools.partial(_log_queued, record, account.name))
        return fut


class SenderDomains(Protocol):
    def signing_domain(self, account_id: int, data: bytes) -> str | None: ...


def exceeded(plan: PlanSettings, period: Period, now: float) -> Reply:
    limit, per, reset = ((plan.daily_limit, "day", day_reset(now)) if period == "day"
                         else (plan.monthly_limit, "month", month_reset(now)))
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reset))
    return QUOTA_EXCEEDED.with_text(f"Maximum credits exceeded: plan {plan.name} allows {limit} "
                                    f"emails a {per}; resets at {when}")


def _log_release(held: Held, fut: asyncio.Future[None]) -> None:
    """Giving back is fire-and-forget; if it fails the count stays high (safe), but say so."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.error("could not give back %d reserved emails of account id %d: %s",
                  held.total, held.account_id, exc)


def _count_queued(plan: str, tls_version: str | None, ended: float, fut: asyncio.Future[Reply]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        metrics.count(metrics.accepted, "smtp", plan)
        metrics.count(metrics.accepted_tls, tls_version or "none")
        metrics.observe(metrics.accept_seconds, time.monotonic() - ended, "smtp")


def _log_queued(record: SpoolRecord, account: str, fut: asyncio.Future[Reply]) -> None:
    """One line per committed message, as Postfix's cleanup/qmgr log them."""
    if fut.cancelled() or fut.exception() is not None:
        return
    log.info("%s: queued from=<%s> nrcpt=%d size=%d account=%s client=%s helo=%s tls=%s",
             record.queue_id, record.mail_from, len(record.recipients),
             len(record.trace_headers) + len(record.body), account, record.client_ip, record.helo,
             record.tls_version or "no",
             extra={"queue_id": record.queue_id, "event": "queued", "account": account,
                    "client_ip": record.client_ip, "via": "smtp"})
