"""Handing one message to a remote server: connect, EHLO, STARTTLS, AUTH, send (pipelined),
each reply judged into a per-recipient verdict; and the pool of idle connections kept for reuse.

The bytes on the wire are `wire.SMTPClient`, our own small client: aiosmtplib, which the rest
of the project uses as a test client, cannot pipeline (RFC 2920), so it spent four round trips
per message where Postfix spends two.

Security: STARTTLS is used whenever offered unless the policy is `none`; under `encrypt` and
`verify` a missing or failed STARTTLS ends the attempt on that host (never a plaintext retry).
What we send is clean: the encoder turns every line ending into CRLF, dot-stuffs, and drops
NUL bytes, so a lenient server downstream cannot be smuggled a second message. Credentials for
smarthost routes are only sent over TLS.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailrelay.delivery.classify import BAD_SEQUENCE, Verdict, classify_error, classify_reply
from mailrelay.delivery.replies import RemoteReply, SMTPClientError
from mailrelay.delivery.routing import Hop
from mailrelay.delivery.wire import SMTPClient

log = logging.getLogger("mailrelay.delivery")


class HostFailed(Exception):
    """This host cannot take the message now (connect error, 4xx greeting, TLS policy): try
    the next one. `verdict` says what to record if it was the last."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.diagnostic)
        self.verdict = verdict


@dataclass(slots=True)
class RemoteConnection:
    """An open, greeted (and maybe TLS-protected) connection, reusable for the next message."""

    client: SMTPClient
    hop: Hop
    ip: str
    tls: str | None  # "TLSv1.3 TLS_AES_256_GCM_SHA384", or None for plaintext
    max_size: int | None
    smtputf8: bool
    eightbit: bool
    idle_since: float = field(default_factory=time.monotonic)
    uses: int = 0

    @property
    def usable(self) -> bool:
        return self.client.usable

    async def close(self) -> None:
        await self.client.quit(timeout=5)


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """Per recipient address, what happened; plus where it happened."""

    verdicts: dict[str, Verdict]
    host: str
    ip: str
    tls: str | None
    reusable: bool


_NO_VERIFY = ssl.create_default_context()
_NO_VERIFY.check_hostname = False
_NO_VERIFY.verify_mode = ssl.CERT_NONE  # opportunistic TLS, as MTAs do (RFC 7435)


def _judge(hop: Hop, ip: str, command: str, reply: RemoteReply, *, warn: bool = True) -> Verdict:
    """`classify_reply`, plus a warning when the server says we broke the protocol (503): that
    is a bug in this client or a smarthost setting, which only an operator can fix."""
    verdict = classify_reply(reply.code, reply.text)
    if warn and reply.code == BAD_SEQUENCE:
        log.warning("%s [%s] answered our %s with \"%s\": a protocol error on our side; deferred, "
                    "not bounced", hop.host, ip, command, verdict.diagnostic)
    return verdict


def _tls_context(verify: bool) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
    return _NO_VERIFY


async def connect(hop: Hop, ip: str, *, helo: str, source_address: str, connect_timeout: float,
                  command_timeout: float, verify_context: ssl.SSLContext | None = None) -> RemoteConnection:
    """Open and greet; STARTTLS per policy; AUTH for smarthosts. Raises HostFailed."""
    try:
        client, greeting = await SMTPClient.connect(ip, hop.port, source_address=source_address or None,
                                                    connect_timeout=connect_timeout,
                                                    command_timeout=command_timeout)
    except (SMTPClientError, OSError, TimeoutError) as exc:
        raise HostFailed(classify_error(exc, connecting=True)) from None
    if greeting.code != 220:
        client.close()
        raise HostFailed(classify_reply(greeting.code, greeting.text))
    try:
        reply = await client.ehlo(helo)
        if reply.code != 250:
            raise HostFailed(_judge(hop, ip, "EHLO", reply))
        if hop.tls != "none" and client.supports("STARTTLS"):
            verify = hop.tls == "verify"
            context = verify_context if (verify and verify_context is not None) else _tls_context(verify)
            reply = await client.starttls(context, hop.host if verify else None)
            if reply.code != 220:
                raise HostFailed(_judge(hop, ip, "STARTTLS", reply))
            reply = await client.ehlo(helo)
            if reply.code != 250:
                raise HostFailed(_judge(hop, ip, "EHLO", reply))
        elif hop.tls in ("encrypt", "verify"):
            raise HostFailed(Verdict("deferred", "4.7.4", f"{hop.host} does not offer STARTTLS, "
                                     f"required by TLS policy {hop.tls}", remote=False))
        if hop.username:
            if client.tls is None:
                raise HostFailed(Verdict("deferred", "4.7.0", f"not sending credentials to {hop.host} "
                                         "without TLS", remote=False))
            reply = await client.login(hop.username, hop.password)
            if reply.code != 235:
                raise HostFailed(_judge(hop, ip, "AUTH", reply))
    except HostFailed:
        client.close()
        raise
    except (SMTPClientError, OSError, TimeoutError, ssl.SSLError) as exc:
        client.close()
        raise HostFailed(classify_error(exc)) from None
    size = client.extensions.get("SIZE", "")
    return RemoteConnection(client, hop, ip, client.tls, int(size) if size.isdigit() and int(size) > 0 else None,
                      client.supports("SMTPUTF8"), client.supports("8BITMIME"))


async def send(conn: RemoteConnection, *, sender: str, recipients: Sequence[str], data: bytes) -> TransactionResult:
    """MAIL, RCPT per recipient, DATA (pipelined when offered); a verdict for every recipient,
    raising nothing."""
    client = conn.client
    conn.uses += 1
    verdicts: dict[str, Verdict] = {}

    def all_get(verdict: Verdict) -> TransactionResult:
        for rcpt in recipients:
            verdicts.setdefault(rcpt, verdict)
        return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=False)

    if conn.max_size is not None and len(data) > conn.max_size:
        return all_get(Verdict("bounced", "5.3.4", f"message size {len(data)} exceeds {conn.hop.host}'s "
                               f"limit of {conn.max_size}", remote=False))
    utf8 = not sender.isascii() or any(not r.isascii() for r in recipients)
    if utf8 and not conn.smtputf8:
        return all_get(Verdict("bounced", "5.6.7", f"{conn.hop.host} does not support SMTPUTF8, needed "
                               "for a non-ASCII address", remote=False))
    options = [f"SIZE={len(data)}"] if client.supports("SIZE") else []
    if conn.eightbit and not data.isascii():
        options.append("BODY=8BITMIME")
    if utf8:
        options.append("SMTPUTF8")
    try:
        t = await client.transaction(sender, recipients, data, options=options, utf8=utf8)
    except ValueError as exc:  # a control character in an address: never sent, never will be
        return all_get(Verdict("bounced", "5.1.3", f"address not sendable ({exc})", remote=False))
    except (SMTPClientError, OSError, TimeoutError) as exc:
        # 421 or a dropped connection: what is not settled yet is deferred (RFC 5321 §3.8).
        client.close()
        return all_get(classify_error(exc))
    warned = False

    def judge(command: str, reply: RemoteReply) -> Verdict:
        nonlocal warned  # one warning per transaction, not one per recipient
        verdict = _judge(conn.hop, conn.ip, command, reply, warn=not warned)
        warned = warned or reply.code == BAD_SEQUENCE
        return verdict

    if t.mail.code // 100 != 2:
        reusable = t.mail.code != 421 and client.usable
        verdict = judge("MAIL", t.mail)
        for rcpt in recipients:
            verdicts[rcpt] = verdict
        return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=reusable)
    accepted: list[str] = []
    for rcpt, reply in zip(recipients, t.rcpts, strict=True):
        if reply.code // 100 == 2:  # 250, 251 or 252 (RFC 5321 §4.2.2): send it the message
            accepted.append(rcpt)
        else:
            verdicts[rcpt] = judge("RCPT", reply)
    if accepted:
        if t.final is not None:
            outcome = judge("message data", t.final)
        elif t.data is not None and t.data.code != 354:
            outcome = judge("DATA", t.data)
        else:  # cannot happen: the client sends the body after a 354 and reads its reply
            outcome = Verdict("deferred", "4.5.0", "no reply to the message data", remote=False)
        for rcpt in accepted:
            verdicts[rcpt] = outcome
    replies = [t.mail, *t.rcpts, *(r for r in (t.data, t.final) if r is not None)]
    reusable = client.usable and all(r.code != 421 for r in replies)
    return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=reusable)


class ConnectionPool:
    """Idle connections by (host, ip, port, tls policy), reused for the next message there."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._idle: dict[tuple[str, str, int, str], list[RemoteConnection]] = {}

    @staticmethod
    def _key(hop: Hop, ip: str) -> tuple[str, str, int, str]:
        return (hop.host, ip, hop.port, hop.tls)

    def take(self, hop: Hop, ip: str) -> RemoteConnection | None:
        idle = self._idle.get(self._key(hop, ip))
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self.keep_seconds:
                return conn
            conn.client.close()
        return None

    def put(self, conn: RemoteConnection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(self._key(conn.hop, conn.ip), []).append(conn)

    async def expire(self, *, everything: bool = False) -> None:
        # Take the expired ones out first, without awaiting: jobs take and put connections
        # while we wait for QUIT replies, and an in-use connection must never be listed idle.
        now = time.monotonic()
        expired: list[RemoteConnection] = []
        for key in list(self._idle):
            idle = self._idle[key]
            keep = [] if everything else [c for c in idle if c.usable and now - c.idle_since < self.keep_seconds]
            expired.extend(c for c in idle if c not in keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        for conn in expired:
            await conn.close()
