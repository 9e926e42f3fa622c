"""Who may send through us, and how an accepted message enters the spool.

Security: mailrelay is never an open relay. A recipient is accepted only from a logged-in
account or from a listener's trusted networks (sent as the configured trusted account);
everyone else gets 554 5.7.1 for every recipient, whatever its syntax (percent hacks, source
routes, bang paths and quoted local parts route nowhere special here).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any, Protocol

from mailrelay.accounts.service import Account, AccountService
from mailrelay.core import reply as R
from mailrelay.core.address import Path
from mailrelay.core.headers import from_domains
from mailrelay.core.ids import new_queue_id
from mailrelay.core.reply import Refusal, Reply
from mailrelay.sandbox.chaos import chaos_reply
from mailrelay.smtp.handler import Identity, Session, Transaction
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.submission import smtpapi
from mailrelay.submission.trace import trace_headers

log = logging.getLogger("mailrelay.submission")

TRUSTED_ACCOUNT_UNAVAILABLE = Reply(451, "4.3.5", "Trusted-network account unavailable, try again later")


class SubmissionPolicy:
    """The Handler for submission listeners (see mailrelay.smtp.handler.Handler)."""

    def __init__(self, *, hostname: str, accounts: AccountService, writer: SpoolWriter,
                 trusted_account: str = "", executor: Executor | None = None,
                 cache_seconds: float = 30.0, sender_domains: SenderDomains | None = None) -> None:
        self.hostname = hostname
        self.accounts = accounts
        self.writer = writer
        self.trusted_account = trusted_account
        self.executor = executor
        self.cache_seconds = cache_seconds
        self.sender_domains = sender_domains  # None: any From: domain may be used
        self._trusted: tuple[Account | None, float] = (None, 0.0)

    async def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        loop = asyncio.get_running_loop()
        account = await loop.run_in_executor(self.executor, self.accounts.authenticate, username, password)
        return Identity(username, account) if account is not None else None

    def _trusted_principal(self) -> Account | None:
        account, expires = self._trusted
        now = time.monotonic()
        if now >= expires:
            account = self.accounts.get(self.trusted_account) if self.trusted_account else None
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

    def check_sender(self, session: Session, txn: Transaction) -> None:
        if session.identity is None and session.trusted and self.sender_account(session) is None:
            log.error("trusted network mail refused: account %r missing or disabled", self.trusted_account)
            raise Refusal(TRUSTED_ACCOUNT_UNAVAILABLE)

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        if session.identity is not None or session.trusted:
            account = self.sender_account(session)
            if account is not None and account.sandbox and account.chaos:
                failure = chaos_reply(account, "rcpt")
                if failure is not None:
                    raise Refusal(failure)
            return None
        log.info("relay denied from %s to <%s>", session.peer_ip, rcpt.address[:80])
        raise Refusal(R.RELAY_DENIED.with_text(f"<{rcpt.address[:80]}>: Relay access denied"))

    def abandon(self, session: Session, txn: Transaction) -> None:
        pass

    def _check_from_domain(self, account: Account, body: bytes) -> None:
        """submission.require_own_domain: From: must be the account's own (SendGrid's sender
        authentication); otherwise anyone could send as anyone's domain through us."""
        assert self.sender_domains is not None
        if self.sender_domains.signing_domain(account.id, body) is None:
            found = from_domains(body)
            what = f"From: domain {found[0]}" if found else "a message without a From: address"
            raise Refusal(Reply(550, "5.7.1", f"{what} is not a sender domain of account {account.name}; "
                                "add it with `mailrelay domain add`"))

    def accept(self, session: Session, txn: Transaction, body: bytes) -> Awaitable[Reply]:
        account = self.sender_account(session)
        if account is None:  # the account went away between MAIL and DATA
            raise Refusal(TRUSTED_ACCOUNT_UNAVAILABLE)
        if account.sandbox and account.chaos:
            failure = chaos_reply(account, "data")
            if failure is not None:
                raise Refusal(failure)
        inspected = smtpapi.inspect(body)
        body = inspected.body
        if self.sender_domains is not None:
            self._check_from_domain(account, body)
        queue_id = new_queue_id()
        now = time.time()
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
            count_usage=True,
        )
        fut = self.writer.submit(record, R.OK.with_text(f"Ok: queued as {queue_id}"))
        if log.isEnabledFor(logging.INFO):
            fut.add_done_callback(functools.partial(_log_queued, record, account.name))
        return fut


class SenderDomains(Protocol):
    def signing_domain(self, account_id: int, data: bytes) -> str | None: ...


def _log_queued(record: SpoolRecord, account: str, fut: asyncio.Future[Reply]) -> None:
    """One line per committed message, as Postfix's cleanup/qmgr log them."""
    if fut.cancelled() or fut.exception() is not None:
        return
    log.info("%s: queued from=<%s> nrcpt=%d size=%d account=%s client=%s helo=%s tls=%s",
             record.queue_id, record.mail_from, len(record.recipients),
             len(record.trace_headers) + len(record.body), account, record.client_ip, record.helo,
             record.tls_version or "no")
