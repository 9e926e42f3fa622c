"""One SMTP transaction with a remote server, on aiosmtplib: connect, EHLO, STARTTLS, send.

Security: STARTTLS is used whenever offered unless the policy is `none`; under `encrypt` and
`verify` a missing or failed STARTTLS ends the attempt on that host (never a plaintext retry).
What we send is clean: aiosmtplib dot-stuffs and turns every line ending into CRLF, and NUL
bytes are removed, so a lenient server downstream cannot be smuggled a second message.
Credentials for smarthost routes are only sent over TLS.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from mailrelay.delivery.classify import Verdict, classify_error, classify_reply
from mailrelay.delivery.routing import Hop


class HostFailed(Exception):
    """This host cannot take the message now (connect error, 4xx greeting, TLS policy): try
    the next one. `verdict` says what to record if it was the last."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.diagnostic)
        self.verdict = verdict


@dataclass(slots=True)
class Connection:
    """An open, greeted (and maybe TLS-protected) connection, reusable for the next message."""

    client: aiosmtplib.SMTP
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
        return self.client.is_connected

    async def close(self) -> None:
        try:
            if self.client.is_connected:
                await self.client.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self.client.close()


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


def _tls_context(verify: bool) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
    return _NO_VERIFY


async def connect(hop: Hop, ip: str, *, helo: str, source_address: str, connect_timeout: float,
                  command_timeout: float, verify_context: ssl.SSLContext | None = None) -> Connection:
    """Open and greet; STARTTLS per policy; AUTH for smarthosts. Raises HostFailed."""
    client = aiosmtplib.SMTP(hostname=ip, port=hop.port, local_hostname=helo, timeout=command_timeout,
                             start_tls=False, source_address=(source_address, 0) if source_address else None)
    try:
        greeting = await client.connect(timeout=connect_timeout)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        client.close()
        raise HostFailed(classify_error(exc)) from None
    if greeting.code != 220:
        client.close()
        raise HostFailed(classify_reply(greeting.code, greeting.message))
    tls: str | None = None
    try:
        await client.ehlo()
        offered = client.supports_extension("starttls")
        if hop.tls != "none" and offered:
            verify = hop.tls == "verify"
            context = verify_context if (verify and verify_context is not None) else _tls_context(verify)
            reply = await client.starttls(server_hostname=hop.host, validate_certs=verify, tls_context=context)
            if reply.code != 220:
                raise HostFailed(classify_reply(reply.code, reply.message))
            ssl_object = client.get_transport_info("ssl_object")
            if ssl_object is not None:
                cipher = ssl_object.cipher()
                tls = f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()
            await client.ehlo()
        elif hop.tls in ("encrypt", "verify"):
            raise HostFailed(Verdict("deferred", "4.7.4", f"{hop.host} does not offer STARTTLS, "
                                     f"required by TLS policy {hop.tls}", remote=False))
        if hop.username:
            if tls is None:
                raise HostFailed(Verdict("deferred", "4.7.0", f"not sending credentials to {hop.host} "
                                         "without TLS", remote=False))
            await client.login(hop.username, hop.password)
    except HostFailed:
        client.close()
        raise
    except aiosmtplib.SMTPAuthenticationError as exc:
        client.close()
        raise HostFailed(classify_reply(exc.code, exc.message)) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
        client.close()
        raise HostFailed(classify_error(exc)) from None
    size = client.esmtp_extensions.get("size", "")
    return Connection(client, hop, ip, tls, int(size) if size.isdigit() and int(size) > 0 else None,
                      client.supports_extension("smtputf8"), client.supports_extension("8bitmime"))


def clean_message(data: bytes) -> bytes:
    """No NUL is passed on (aiosmtplib normalises line endings and dot-stuffs the rest)."""
    return data.replace(b"\x00", b"") if b"\x00" in data else data


async def send(conn: Connection, *, sender: str, recipients: Sequence[str], data: bytes) -> TransactionResult:
    """MAIL, RCPT per recipient, DATA; a verdict for every recipient, raising nothing."""
    client = conn.client
    conn.uses += 1
    verdicts: dict[str, Verdict] = {}

    def all_get(verdict: Verdict) -> TransactionResult:
        for rcpt in recipients:
            verdicts.setdefault(rcpt, verdict)
        return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=False)

    data = clean_message(data)
    if conn.max_size is not None and len(data) > conn.max_size:
        return all_get(Verdict("bounced", "5.3.4", f"message size {len(data)} exceeds {conn.hop.host}'s "
                               f"limit of {conn.max_size}", remote=False))
    utf8 = not sender.isascii() or any(not r.isascii() for r in recipients)
    if utf8 and not conn.smtputf8:
        return all_get(Verdict("bounced", "5.6.7", f"{conn.hop.host} does not support SMTPUTF8, needed "
                               "for a non-ASCII address", remote=False))
    options = [f"SIZE={len(data)}"] if conn.max_size is not None or client.supports_extension("size") else []
    if conn.eightbit and not data.isascii():
        options.append("BODY=8BITMIME")
    if utf8:
        options.append("SMTPUTF8")
    enc = "utf-8" if utf8 else "ascii"
    try:
        reply = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode(enc) + b">",
                                             *[o.encode() for o in options])
        if reply.code != 250:
            return all_get(classify_reply(reply.code, reply.message))
        accepted: list[str] = []
        for rcpt in recipients:
            reply = await client.execute_command(b"RCPT", b"TO:<" + rcpt.encode(enc) + b">")
            if reply.code in (250, 251):
                accepted.append(rcpt)
            else:
                verdicts[rcpt] = classify_reply(reply.code, reply.message)
        if not accepted:
            await client.rset()
            return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=True)
        try:
            reply = await client.data(data)
            outcome = classify_reply(reply.code, reply.message)
        except aiosmtplib.SMTPDataError as exc:
            outcome = classify_reply(exc.code, exc.message)
        for rcpt in accepted:
            verdicts[rcpt] = outcome
        return TransactionResult(verdicts, conn.hop.host, conn.ip, conn.tls, reusable=client.is_connected)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        # 421 or a dropped connection: what is not settled yet is deferred (RFC 5321 §3.8).
        client.close()
        return all_get(classify_error(exc))
