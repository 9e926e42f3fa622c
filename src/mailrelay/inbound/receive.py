"""Mail for our own inbound domains, received on port 25 from anyone: the recipient check at
RCPT, then at the end of DATA the checks of the sending side and the stored record.

RCPT (`check_recipient`): the domain must be an inbound domain of an active account, and the
address known (`mailrelay address add`) or the domain catch-all. One stored message belongs to
one account and one DMARC mode, so a recipient that would mix them is answered 452 4.5.3 and
sent again by the client in another transaction (RFC 5321 §4.5.3.1.10). Each client address may
start `INBOUND_RATE_PER_MINUTE` inbound transactions a minute (per process).

End of DATA (`accept`): SPF (RFC 7208) of the client address for the MAIL FROM domain (the HELO
name for a null sender), DKIM (RFC 6376) for every signature, iprev (RFC 8601 §3: the PTR name
resolves back to the address) concurrently, then DMARC (RFC 7489) from their results. Each is
bounded in time and a DNS failure is a temperror, never a pass. Under `enforce`, a DMARC fail
with p=reject is refused (550 5.7.1) and p=quarantine is accepted and marked; pct= picks which
failing messages get the policy, the others get the next lower one (RFC 7489 §6.6.4). The message is
stored as received, minus Authentication-Results fields claiming our hostname (RFC 8601 §5);
our Received and Authentication-Results fields are the stored prefix (STYLE habit 8). No
quota, plan, sandbox or X-SMTPAPI processing applies to received mail.

Security: everything here comes from unauthenticated clients and from DNS. The results only
record facts (nothing is trusted because of them), header values are escaped by
mailauth.authres, the recipient cache is bounded (inbound.directory), and the per-address rate
limit bounds the DNS work one client can cause.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from mailrelay.core import reply as R
from mailrelay.core import status
from mailrelay.core.address import Path
from mailrelay.core.domains import DomainError, normalize_domain
from mailrelay.core.headers import header_section, message_id_value, subject_value
from mailrelay.core.ids import new_queue_id
from mailrelay.core.reply import Refusal, Reply
from mailrelay.inbound.directory import Found, InboundDirectory, InboundDomain, _Miss
from mailrelay.mailauth.authres import authentication_results, strip_fields, strip_forged
from mailrelay.mailauth.dkimverify import DKIMResult, verify_dkim
from mailrelay.mailauth.dmarc import DMARCResult, check_message, dmarc_action
from mailrelay.mailauth.spf import SPFChecker, SPFResult
from mailrelay.quota.rate import RateLimiter
from mailrelay.resolver.base import DNSTemporaryError
from mailrelay.smtp.handler import Session, Transaction, relay_denied
from mailrelay.smtp.trace import received
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import message_bodies, messages, recipients

log = logging.getLogger("mailrelay.inbound")

# Inbound transactions a client address may start per minute, per process (a module constant:
# no setting yet). Generous for a real MTA delivering a burst, small for a flood.
INBOUND_RATE_PER_MINUTE = 600
MAX_PTR_NAMES = 10  # PTR names whose addresses are looked up for iprev (RFC 8601 §3 leaves it open)
QUARANTINE_HEADER = b"X-Mailrelay-Quarantine: dmarc\r\n"

# Replies (RFC 3463 enhanced codes): X.1.1 bad destination mailbox, X.7.1 not authorized,
# X.5.3 too many recipients (here: for this transaction).
USER_UNKNOWN = Reply(550, "5.1.1", "Recipient address rejected: User unknown in virtual mailbox table")
DOMAIN_DISABLED = Reply(550, "5.7.1", "Recipient address rejected: this domain does not accept mail")
SEPARATE_TRANSACTION = Reply(452, "4.5.3", "Too many recipients: send mail for this recipient "
                                           "in another transaction")
INBOUND_RATE_EXCEEDED = Reply(451, "4.7.1", "Rate limit exceeded: too many messages from your address")
DMARC_REJECTED = Reply(550, "5.7.1", "Rejected by DMARC policy")

_META_FIELD = re.compile(rb"(?im)^(message-id|subject)[ \t]*:(.*(?:\r?\n[ \t].*)*)")


class InboundResolver(Protocol):
    """The DNS questions receiving asks (mailrelay.resolver.dnspython.DNSResolver)."""

    async def txt(self, name: str) -> list[str]: ...

    async def addresses(self, host: str) -> list[str]: ...

    async def ptr(self, ip: str) -> list[str]: ...


@dataclass(slots=True)
class InboundState:
    """The `Transaction.hold` of received mail: whose it is, and its recipients' domains."""

    account_id: int
    account_name: str
    dmarc_policy: str
    domains: dict[str, InboundDomain] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IPRev:
    """Reverse DNS of the client (RFC 8601 §3): `name` is the confirmed name on pass, else the
    first PTR name seen (or "")."""

    result: str  # pass | fail | temperror | permerror
    ip: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Checks:
    spf: SPFResult
    dkim: list[DKIMResult]
    dmarc: DMARCResult
    iprev: IPRev


# -- iprev -----------------------------------------------------------------------------------


async def check_iprev(ip: str, resolver: InboundResolver, *, timeout: float) -> IPRev:
    """RFC 8601 §3: pass if a PTR name of `ip` has `ip` among its addresses. No PTR:
    permerror (§2.7.3); names that do not lead back: fail; DNS failure or `timeout`: temperror."""
    try:
        address = _ip(ip)
    except ValueError:
        return IPRev("permerror", ip)
    try:
        async with asyncio.timeout(timeout):
            names = (await resolver.ptr(str(address)))[:MAX_PTR_NAMES]
            if not names:
                return IPRev("permerror", str(address))
            found = await asyncio.gather(*(resolver.addresses(n) for n in names), return_exceptions=True)
    except (DNSTemporaryError, TimeoutError):
        return IPRev("temperror", str(address))
    failed = False
    for name, addrs in zip(names, found, strict=True):
        if isinstance(addrs, BaseException):
            failed = True
            continue
        if any(_same_ip(a, address) for a in addrs):
            return IPRev("pass", str(address), name)
    return IPRev("temperror" if failed else "fail", str(address), names[0])


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.strip().partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _same_ip(text: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return _ip(text) == address
    except ValueError:
        return False


# -- the receiver ----------------------------------------------------------------------------


class InboundReceiver:
    """The policy for mail received for our own domains: the Handler steps mailrelay.router
    hands it for sessions that are neither logged in nor trusted (RCPT and the end of DATA)."""

    def __init__(self, *, hostname: str, directory: InboundDirectory, resolver: InboundResolver,
                 spf: SPFChecker, writer: SpoolWriter, executor: Executor | None = None,
                 dns_timeout: float = 5.0, rate_per_minute: int = INBOUND_RATE_PER_MINUTE,
                 clock: Callable[[], float] = time.time, sample: Callable[[], float] = random.random,
                 ) -> None:
        self.hostname = hostname
        self.directory = directory
        self.resolver = resolver
        self.spf = spf
        self.writer = writer
        self.executor = executor
        self.dns_timeout = dns_timeout
        self.rate_per_minute = rate_per_minute
        self.clock = clock
        self.sample = sample  # DMARC pct= sampling (RFC 7489 §6.6.4): a draw in [0, 1)
        self.rate = RateLimiter()

    def close(self) -> None:
        self.spf.close()

    # -- RCPT ----------------------------------------------------------------------------------

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        """Accept `rcpt` for one of our inbound domains, or raise Refusal; an awaitable when the
        directory must ask the database."""
        try:
            domain = normalize_domain(rcpt.domain) if rcpt.domain else ""
        except DomainError:
            domain = ""  # an address literal or a malformed name: not one of ours
        if not domain:
            raise relay_denied(session, rcpt)
        local = rcpt.local_part.lower()
        hit = self.directory.cached(domain, local)
        if isinstance(hit, _Miss):
            return self._check_later(session, txn, rcpt, domain, local)
        self._decide(session, txn, rcpt, hit)
        return None

    async def _check_later(self, session: Session, txn: Transaction, rcpt: Path, domain: str,
                           local: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.executor, self.directory.lookup, domain, local)
        except Exception as exc:
            log.error("inbound recipient lookup for %s failed: %s", domain, exc)
            raise Refusal(R.LOCAL_ERROR) from None
        self._decide(session, txn, rcpt, found)

    def _decide(self, session: Session, txn: Transaction, rcpt: Path, found: Found) -> None:
        d = found.domain
        shown = f"<{rcpt.address[:80]}>"
        if d is None:
            raise relay_denied(session, rcpt)
        if not d.active:
            raise Refusal(DOMAIN_DISABLED.with_text(f"{shown}: {DOMAIN_DISABLED.text}"))
        if not (found.known or d.catch_all):
            raise Refusal(USER_UNKNOWN.with_text(f"{shown}: {USER_UNKNOWN.text}"))
        state = txn.hold
        if isinstance(state, InboundState):
            if state.account_id != d.account_id or state.dmarc_policy != d.dmarc_policy:
                raise Refusal(SEPARATE_TRANSACTION.with_text(f"{shown}: {SEPARATE_TRANSACTION.text}"))
            state.domains[d.name] = d
            return
        wait = self.rate.take(int(_ip(session.peer_ip)), self.rate_per_minute, self.clock())
        if wait:
            seconds = max(1, round(wait))
            raise Refusal(INBOUND_RATE_EXCEEDED.with_text(
                f"{INBOUND_RATE_EXCEEDED.text}; try again in {seconds} second{'s' if seconds > 1 else ''}"))
        txn.hold = InboundState(d.account_id, d.account_name, d.dmarc_policy, {d.name: d})

    # -- end of DATA ---------------------------------------------------------------------------

    async def check(self, session: Session, txn: Transaction, body: bytes) -> Checks:
        """SPF, DKIM and iprev side by side, then DMARC from their results; never raises."""
        spf_task = self.spf.check(session.peer_ip, txn.sender.address, session.helo)
        dkim_task = verify_dkim(body, resolver=self.resolver, timeout=2 * self.dns_timeout)
        iprev_task = check_iprev(session.peer_ip, self.resolver, timeout=2 * self.dns_timeout)
        spf, dkim, iprev = await asyncio.gather(spf_task, dkim_task, iprev_task)
        try:
            async with asyncio.timeout(2 * self.dns_timeout + 1):
                dmarc = await check_message(body, (spf.result, spf.domain), dkim, resolver=self.resolver)
        except TimeoutError:
            dmarc = DMARCResult("temperror", None, "", "", "DMARC lookup timed out")
        return Checks(spf, dkim, dmarc, iprev)

    async def accept(self, session: Session, txn: Transaction, body: bytes) -> Reply:
        """Check, then store with direction "in"; 250 only once committed."""
        state = txn.hold
        assert isinstance(state, InboundState)
        checks = await self.check(session, txn, body)
        action = dmarc_action(checks.dmarc, "enforce" if state.dmarc_policy == "enforce" else "monitor",
                              sample=self.sample())
        if action == "reject":
            log.info("DMARC reject from %s: from-domain=%s mail-from=<%s> account=%s",
                     session.peer_ip, checks.dmarc.from_domain, txn.sender.address[:80], state.account_name)
            raise Refusal(DMARC_REJECTED.with_text(
                f"{DMARC_REJECTED.text} for {checks.dmarc.from_domain or 'the sender domain'}"))
        queue_id = new_queue_id()
        now = self.clock()
        authres = authentication_results(
            self.hostname, spf=(checks.spf.result, checks.spf.domain, checks.spf.scope),
            dkim=checks.dkim, dmarc=checks.dmarc,
            iprev=(checks.iprev.result, checks.iprev.ip, checks.iprev.name))
        # Postfix's form: `from HELO (NAME [IP])`, NAME the confirmed reverse DNS name or "unknown".
        confirmed = checks.iprev.name if checks.iprev.result == "pass" else ""
        prefix = received(session, txn, hostname=self.hostname, queue_id=queue_id, now=now,
                          client_name=confirmed or "unknown") + authres
        if action == "quarantine":
            prefix += QUARANTINE_HEADER
        # Forged results claiming our name go (RFC 8601 §5), and so does any quarantine mark
        # the sender wrote itself: only ours, in the prefix, may say so.
        kept = strip_fields(strip_forged(body, self.hostname), QUARANTINE_HEADER.split(b":")[0])
        message_id, subject = _fields(kept)
        rcpts = [(_stored_address(r, state), dict(r.params)) for r in txn.recipients]
        record = SpoolRecord(
            queue_id=queue_id, account_id=state.account_id, mail_from=txn.sender.address,
            mail_params=dict(txn.sender.params), recipients=rcpts, client_ip=session.peer_ip,
            helo=session.helo, auth_user=None, tls_version=session.tls_version,
            tls_cipher=session.tls_cipher, listener=session.listener, trace_headers=prefix,
            body=kept, created_at=now, message_id_header=message_id,
            subject=subject, count_usage=0, processed_event=False,
            direction="in", auth=auth_record(checks, session, action=action, authres=authres),
            initial_status=status.INBOUND if any(d.webhook for d in state.domains.values()) else status.KEPT,
        )
        due_at = self.writer.now()  # on the queue's clock, like mail to send (spool.writer)
        await self.writer.run(lambda conn: store(conn, record, due_at))
        log.info("%s: received from=<%s> nrcpt=%d size=%d account=%s client=%s helo=%s spf=%s "
                 "dkim=%s dmarc=%s iprev=%s", queue_id, record.mail_from, len(rcpts),
                 len(prefix) + len(kept), state.account_name, session.peer_ip, session.helo,
                 checks.spf.result, ",".join(d.result for d in checks.dkim) or "none",
                 checks.dmarc.result, checks.iprev.result,
                 extra={"queue_id": queue_id, "event": "received", "account": state.account_name,
                        "client_ip": session.peer_ip})
        return R.OK.with_text(f"Ok: queued as {queue_id}")


def _stored_address(rcpt: Path, state: InboundState) -> str:
    """The recipient with its domain as A-labels, as the domains table names it (the parse
    dispatcher groups recipients by that name)."""
    try:
        domain = normalize_domain(rcpt.domain)
    except DomainError:  # pragma: no cover - checked at RCPT
        return rcpt.address
    return f"{rcpt.local_part}@{domain}" if domain in state.domains else rcpt.address


def store(conn: Connection, record: SpoolRecord, due_at: float | None = None) -> None:
    """Write a received message, its recipients (to be posted from `due_at`) and one
    `inbound-received` event each, in the spool writer's transaction."""
    msg, body, rcpts = record.rows(due_at)
    conn.execute(messages.insert(), [msg])
    conn.execute(message_bodies.insert(), [body])
    conn.execute(recipients.insert(), rcpts)
    detail = "kept in the inbox (no inbound webhook)" if record.initial_status == status.KEPT \
        else "to be posted to the inbound webhook"
    add_events(conn, [{"account_id": record.account_id, "message_id": record.queue_id,
                       "recipient": addr, "type": status.EV_INBOUND_RECEIVED, "at": record.created_at,
                       "detail": detail} for addr, _ in record.recipients])


def auth_record(checks: Checks, session: Session, *, action: str, authres: bytes) -> dict[str, Any]:
    """The `messages.auth` JSON: every result, for the parse webhook and the inbox."""
    s, m, i = checks.spf, checks.dmarc, checks.iprev
    value = authres.decode("utf-8", "replace").partition(":")[2]
    return {
        "spf": {"result": s.result, "domain": s.domain, "scope": s.scope, "comment": s.comment},
        "dkim": [{"result": d.result, "domain": d.domain, "selector": d.selector,
                  "algorithm": d.algorithm, "comment": d.comment} for d in checks.dkim],
        "dmarc": {"result": m.result, "policy": m.policy, "domain": m.domain,
                  "from_domain": m.from_domain, "comment": m.comment,
                  "action": "none" if action == "accept" else action},
        "iprev": {"result": i.result, "ip": i.ip, "name": i.name},
        "sender_ip": session.peer_ip,
        "helo": session.helo,
        "authentication_results": " ".join(value.split()),
    }


def _fields(message: bytes) -> tuple[str | None, str | None]:
    """(Message-ID, decoded Subject) of the header section, as events and the inbox show them."""
    message_id: str | None = None
    subject: str | None = None
    for m in _META_FIELD.finditer(header_section(message)):
        if m.group(1).lower() == b"message-id" and message_id is None:
            message_id = message_id_value(m.group(2))
        elif m.group(1).lower() == b"subject" and subject is None:
            subject = subject_value(m.group(2))
    return message_id, subject
