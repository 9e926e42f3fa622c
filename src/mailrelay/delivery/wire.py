"""A small asyncio SMTP client for outbound delivery, with PIPELINING (RFC 2920).

With PIPELINING one transaction costs two round trips (MAIL+RCPT...+DATA, then the body), as
in Postfix, where a one-reply-per-write client needs 3 + recipients. Replies are matched to
commands strictly in order; replies nobody waits for are queued and handed to the next read.

Security: the peer is untrusted. Reply lines, replies and buffered bytes are bounded; a
STARTTLS 220 followed by anything already received is refused (plaintext injected before the
handshake, CVE-2011-0411); CR, LF, NUL and other controls never reach the wire inside an
argument; the body is sent with every line ending made CRLF, NUL removed and dot-stuffing,
so only CRLF "." CRLF ends it (no smuggling through a lenient server downstream). Passwords
appear in no message or exception.

Exceptions::

    SMTPClientError
     +-- ProtocolError      malformed or oversized reply, too many unsolicited replies,
     |                      data after the STARTTLS 220
     +-- ConnectionLost     (also ConnectionError) peer closed or reset the connection
    TimeoutError            connect, reply or body transfer took too long
    OSError                 connection failures as asyncio raises them (ConnectionRefusedError, ...)
    ValueError              a control character or unencodable text in an address or option
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

MAX_LINE = 8192  # bytes in one reply line; RFC 5321 §4.5.3.1.5 needs only 512
MAX_REPLY = 64 * 1024  # bytes in one (multi-line) reply
MAX_BUFFERED = 1024 * 1024  # bytes of replies received and not yet read, plus a partial line
MAX_UNSOLICITED = 100  # replies received beyond the commands sent

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


class Reply(NamedTuple):
    code: int
    text: str  # the lines' text without their codes, stripped, joined by "\n"


class SMTPClientError(Exception):
    """Base of this module's own errors."""


class ProtocolError(SMTPClientError):
    """The server broke the protocol; the connection is closed."""


class ConnectionLost(SMTPClientError, ConnectionError):
    """The peer closed or reset the connection while a reply or a write was due."""


@dataclass(slots=True)
class Transaction:
    """The replies of one mail transaction, as far as it went."""

    mail: Reply
    rcpts: list[Reply]  # one per recipient in order; empty when nothing was sent or read after MAIL
    data: Reply | None  # reply to DATA, None if DATA was not sent
    final: Reply | None  # reply after the body's final ".", None if the body was not sent


def encode_body(data: bytes) -> bytes:
    """The message as sent after DATA's 354: CRLF line endings, no NUL, dot-stuffed, then ".".

    RFC 5321 §4.5.2 (transparency) and §2.3.8 (only CRLF ends a line): a bare CR or LF must not
    reach a server that might take "\\n.\\n" as the end of data.
    """
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    # Common case: every CR is part of a CRLF and every LF too, so there is nothing to normalise.
    crlf = data.count(b"\r\n")
    if crlf != data.count(b"\n") or crlf != data.count(b"\r"):
        data = _LINE_ENDING.sub(b"\r\n", data)
    data = data.replace(b"\r\n.", b"\r\n..")
    if data[:1] == b".":
        data = b"." + data
    if data[-2:] == b"\r\n":
        return data + b".\r\n"
    return data + b"\r\n.\r\n"


def _encode_arg(value: str, encoding: str) -> bytes:
    """An address or parameter for a command line; controls would end or split the command."""
    if _CONTROL.search(value):
        raise ValueError(f"control character in SMTP argument {value!r}")
    return value.encode(encoding)  # UnicodeEncodeError is a ValueError


def _parse_extensions(text: str) -> dict[str, str]:
    """EHLO keywords (upper-case) and their parameters; the first line is the greeting."""
    extensions: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.partition(" ")
        keyword = keyword.upper()
        if keyword.startswith("AUTH="):
            # Pre-RFC 4954 servers advertise "AUTH=LOGIN PLAIN"; merge it into AUTH.
            mechanisms = (keyword[5:] + " " + params).split()
            extensions["AUTH"] = " ".join([*extensions.get("AUTH", "").split(), *mechanisms])
        elif keyword:
            extensions[keyword] = params.strip()
    return extensions


def _expire(waiter: asyncio.Future[Reply], what: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply to {what} within {timeout:g} s"))


class _ReplyReader(asyncio.Protocol):
    """Parses replies as bytes arrive and hands them, in order, to one waiter or a queue."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.queue: deque[tuple[Reply, int]] = deque()  # (reply, its size in bytes)
        self.queued_bytes = 0
        self.waiter: asyncio.Future[Reply] | None = None
        self.outstanding = 1  # commands sent whose reply has not arrived; 1 for the greeting
        self.error: SMTPClientError | None = None  # set once the connection is unusable for good
        self.saw_421: Reply | None = None  # RFC 5321 §3.8: the server is closing
        self.code = -1  # code of the multi-line reply in progress
        self.lines: list[bytearray] = []
        self.reply_size = 0
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    @property
    def clean(self) -> bool:
        """Nothing received that was not read, nothing due."""
        return not self.queue and not self.buf and self.code < 0 and self.outstanding == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.buf += data
        try:
            if b"\n" in data:
                self._parse()
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
        except ProtocolError as exc:
            self.fail(exc)

    def _parse(self) -> None:
        buf = self.buf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > MAX_LINE:
                raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
            stop = end - 1 if end > start and buf[end - 1] == 13 else end  # CRLF or bare LF
            self._line(buf[start:stop])
            start = end + 1
        del buf[:start]

    def _line(self, line: bytearray) -> None:
        """One reply line: "ddd" then " ", "-" (more lines follow) or nothing (RFC 5321 §4.2)."""
        sep = line[3] if len(line) > 3 else 32
        if len(line) < 3 or not line[:3].isdigit() or sep not in (32, 45):  # " ", "-"
            raise ProtocolError(f"malformed reply line {bytes(line[:40])!r}")
        code = int(line[:3])
        if self.code >= 0 and code != self.code:
            raise ProtocolError(f"reply code changed from {self.code} to {code} within one reply")
        self.reply_size += len(line) + 2
        if self.reply_size > MAX_REPLY:
            raise ProtocolError(f"reply longer than {MAX_REPLY} bytes")
        if sep == 45:
            self.code = code
            self.lines.append(line[4:].strip())
            return
        if self.lines:
            self.lines.append(line[4:].strip())
            text = b"\n".join(self.lines).decode("utf-8", "replace")
            self.lines = []
        else:
            text = line[4:].strip().decode("utf-8", "replace")
        size, self.reply_size, self.code = self.reply_size, 0, -1
        self._deliver(Reply(code, text), size)

    def _deliver(self, reply: Reply, size: int) -> None:
        self.outstanding -= 1
        if reply.code == 421:
            self.saw_421 = reply
        waiter = self.waiter
        if waiter is not None and not self.queue:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(reply)
                return
        if self.outstanding < -MAX_UNSOLICITED:
            raise ProtocolError(f"more than {MAX_UNSOLICITED} unsolicited replies")
        self.queue.append((reply, size))
        self.queued_bytes += size
        if self.queued_bytes + len(self.buf) > MAX_BUFFERED:
            raise ProtocolError(f"more than {MAX_BUFFERED} bytes of unread replies")

    def fail(self, exc: SMTPClientError) -> None:
        """The connection is done for: wake whoever waits with `exc`, drop what was buffered."""
        if self.error is None:
            self.error = exc
        self.queue.clear()
        self.queued_bytes = 0
        self.buf.clear()
        self.lines = []
        self._wake(self.error)
        if self.transport is not None:
            self.transport.abort()

    def _wake(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        drain, self.drain_waiter = self.drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            why = f"421 {self.saw_421.text}" if self.saw_421 else str(exc or "closed by the server")
            self.error = ConnectionLost(f"connection lost: {why}")
            self.error.__cause__ = exc
        # Replies that arrived before the end stay readable; only then does a read fail.
        self._wake(self.error)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain, self.drain_waiter = self.drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)


class SMTPClient:
    """One connection to an SMTP server: greeting, EHLO, STARTTLS, AUTH, transactions."""

    def __init__(self, transport: asyncio.Transport, reader: _ReplyReader, command_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._reader = reader
        self._timeout = command_timeout
        self._tls: str | None = None
        self.extensions: dict[str, str] = {}

    @classmethod
    async def connect(cls, host: str, port: int, *, source_address: str | None = None,
                      connect_timeout: float = 30.0, command_timeout: float = 300.0) -> tuple[SMTPClient, Reply]:
        """Connect (from source_address if given) and read the greeting, whatever its code."""
        loop = asyncio.get_running_loop()
        local = (source_address, 0) if source_address else None
        try:
            transport, reader = await asyncio.wait_for(
                loop.create_connection(_ReplyReader, host, port, local_addr=local), connect_timeout)
        except TimeoutError:
            raise TimeoutError(f"connect to {host} port {port} timed out after {connect_timeout:g} s") from None
        client = cls(transport, reader, command_timeout)
        greeting = await client._read("the greeting")
        return client, greeting

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @property
    def tls(self) -> str | None:
        """Protocol and cipher once STARTTLS is done, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"."""
        return self._tls

    @property
    def usable(self) -> bool:
        """Open and in sync: a reused connection must not start with a stale reply pending."""
        reader = self._reader
        return (reader.error is None and reader.saw_421 is None and not self._transport.is_closing()
                and reader.clean)

    async def ehlo(self, name: str) -> Reply:
        """EHLO, or HELO when EHLO is refused (RFC 5321 §4.1.4); records the extensions."""
        arg = _encode_arg(name, "ascii")
        self.extensions = {}
        reply = await self._command(b"EHLO " + arg, "EHLO")
        if 500 <= reply.code <= 599:
            return await self._command(b"HELO " + arg, "HELO")
        if reply.code == 250:
            self.extensions = _parse_extensions(reply.text)
        return reply

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> Reply:
        """STARTTLS and the handshake on 220; any other reply is returned with no upgrade."""
        reply = await self._command(b"STARTTLS", "STARTTLS")
        if reply.code != 220:
            return reply
        if self._reader.error is not None:
            raise self._reader.error  # e.g. the bytes after the 220 were not even a reply
        if not self._reader.clean:
            # CVE-2011-0411: bytes sent before the handshake would be read as if protected.
            exc = ProtocolError("data received after the STARTTLS 220, before the TLS handshake")
            self._reader.fail(exc)
            raise exc
        try:
            transport = await self._loop.start_tls(self._transport, self._reader, context,
                                                   server_hostname=server_hostname,
                                                   ssl_handshake_timeout=self._timeout)
        except BaseException:
            self.close()
            raise
        if transport is None:
            self.close()
            raise ConnectionLost("connection lost during the TLS handshake")
        self._transport = self._reader.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            cipher = ssl_object.cipher()
            self._tls = f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()
        else:
            self._tls = "TLS"
        self.extensions = {}  # RFC 3207 §4.2: forget what was learnt before TLS
        return reply

    async def login(self, username: str, password: str) -> Reply:
        """AUTH PLAIN (RFC 4616) or else AUTH LOGIN; returns the final reply (235 is success)."""
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        user, secret = username.encode(), password.encode()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + secret)
            reply = await self._command(b"AUTH PLAIN " + token, "AUTH PLAIN")
            if reply.code == 334:  # RFC 4954 §4: a server may still ask for the response
                reply = await self._command(token, "AUTH PLAIN")
        elif "LOGIN" in mechanisms:
            reply = await self._command(b"AUTH LOGIN", "AUTH LOGIN")
            for step in (user, secret):
                if reply.code != 334:
                    return reply
                reply = await self._command(base64.b64encode(step), "AUTH LOGIN")
        else:
            return Reply(504, "5.5.4 no supported AUTH mechanism")
        if reply.code == 334:
            # The server wants more than we have: cancel so the dialogue is in sync (RFC 4954 §4).
            reply = await self._command(b"*", "AUTH cancellation")
        return reply

    async def rset(self) -> Reply:
        return await self._command(b"RSET", "RSET")

    async def transaction(self, sender: str, recipients: Sequence[str], data: bytes, *,
                          options: Sequence[str] = (), utf8: bool = False) -> Transaction:
        """MAIL, RCPT for each recipient, DATA and the body: pipelined when the server allows."""
        enc = "utf-8" if utf8 else "ascii"
        mail_cmd = b" ".join([b"MAIL FROM:<" + _encode_arg(sender, enc) + b">",
                              *(_encode_arg(opt, enc) for opt in options)]) + b"\r\n"
        rcpt_cmds = [b"RCPT TO:<" + _encode_arg(rcpt, enc) + b">\r\n" for rcpt in recipients]
        if self.supports("PIPELINING"):
            result = await self._pipelined(mail_cmd, rcpt_cmds, data)
        else:
            result = await self._lock_step(mail_cmd, rcpt_cmds, data)
        ended = result.data is not None and result.data.code == 354  # by the body or a lone "."
        if 200 <= result.mail.code <= 299 and not ended and self.usable:
            # MAIL opened a transaction that no "." ended: RSET it, or the next MAIL would be a
            # "nested MAIL" (RFC 5321 §4.1.1.5). The result stands whatever happens here; a
            # failure only leaves the client unusable.
            try:
                reply = await self.rset()
            except (SMTPClientError, OSError):
                return result
            if reply.code != 250:
                self.close()
        return result

    async def _pipelined(self, mail_cmd: bytes, rcpt_cmds: list[bytes], data: bytes) -> Transaction:
        # RFC 2920 §3.1: MAIL, RCPT and DATA may go in one group; DATA is last.
        self._send(b"".join([mail_cmd, *rcpt_cmds, b"DATA\r\n"]), len(rcpt_cmds) + 2)
        mail = await self._read("MAIL FROM")
        if mail.code == 421 or (mail.code >= 300 and self._reader.error is not None and not self._reader.queue):
            # The server is closing (RFC 5321 §3.8): its reason is the news, not the lost connection.
            return Transaction(mail, [], None, None)
        rcpts = [await self._read("RCPT TO") for _ in rcpt_cmds]
        data_reply = await self._read("DATA")
        if data_reply.code != 354:
            return Transaction(mail, rcpts, data_reply, None)
        if not (200 <= mail.code <= 299 and any(200 <= r.code <= 299 for r in rcpts)):
            # RFC 2920 §3.1: DATA accepted with no valid recipient; send an empty message
            # to end it, the server must refuse it.
            self._send(b".\r\n", 1)
            await self._read("end of data")
            return Transaction(mail, rcpts, data_reply, None)
        return Transaction(mail, rcpts, data_reply, await self._send_body(data))

    async def _lock_step(self, mail_cmd: bytes, rcpt_cmds: list[bytes], data: bytes) -> Transaction:
        self._send(mail_cmd, 1)
        mail = await self._read("MAIL FROM")
        if not 200 <= mail.code <= 299:
            return Transaction(mail, [], None, None)
        rcpts: list[Reply] = []
        for cmd in rcpt_cmds:
            self._send(cmd, 1)
            rcpts.append(await self._read("RCPT TO"))
        if not any(200 <= r.code <= 299 for r in rcpts):
            return Transaction(mail, rcpts, None, None)
        data_reply = await self._command(b"DATA", "DATA")
        if data_reply.code != 354:
            return Transaction(mail, rcpts, data_reply, None)
        return Transaction(mail, rcpts, data_reply, await self._send_body(data))

    async def _send_body(self, data: bytes) -> Reply:
        self._send(encode_body(data), 1)
        await self._drain()
        return await self._read("end of data")

    async def _drain(self) -> None:
        """Wait until the transport took the body, failing after command_timeout without progress.

        The reply timeout starts only then, so a large message on a slow link is not cut off.
        """
        reader = self._reader
        while reader.paused and reader.error is None:
            if reader.drain_waiter is None:
                reader.drain_waiter = self._loop.create_future()
            waiter = reader.drain_waiter
            before = self._transport.get_write_buffer_size()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._timeout)
            except TimeoutError:
                if self._transport.get_write_buffer_size() < before:
                    continue
                waiter.cancel()
                self.close()
                raise TimeoutError(f"no progress sending the message body for {self._timeout:g} s") from None
            except BaseException:
                self.close()
                raise
        if reader.error is not None and not reader.queue:
            raise reader.error

    async def quit(self, timeout: float = 5.0) -> None:
        """QUIT, waiting up to `timeout` for the reply, then close; never raises."""
        try:
            if self._reader.error is None and not self._transport.is_closing():
                self._send(b"QUIT\r\n", 1)
                await self._read("QUIT", timeout)
        except (SMTPClientError, OSError):
            pass  # best effort: the connection is closed below either way
        finally:
            self.close()

    def close(self) -> None:
        """Abort the connection now; idempotent."""
        if self._reader.error is None:
            self._reader.error = ConnectionLost("connection closed by the client")
        if not self._transport.is_closing():
            self._transport.abort()

    async def _command(self, line: bytes, what: str) -> Reply:
        self._send(line + b"\r\n", 1)
        return await self._read(what)

    def _send(self, data: bytes, replies: int) -> None:
        """Write `data`, which asks for `replies` replies."""
        reader = self._reader
        if reader.error is not None and not reader.queue:
            raise reader.error
        reader.outstanding += replies
        if not self._transport.is_closing():
            self._transport.write(data)

    async def _read(self, what: str, timeout: float | None = None) -> Reply:
        """The next reply, in order; `what` names the command in a timeout's message."""
        reader = self._reader
        if reader.queue:
            reply, size = reader.queue.popleft()
            reader.queued_bytes -= size
            return reply
        if reader.error is not None:
            self.close()
            raise reader.error
        waiter: asyncio.Future[Reply] = self._loop.create_future()
        reader.waiter = waiter
        limit = self._timeout if timeout is None else timeout
        timer = self._loop.call_later(limit, _expire, waiter, what, limit)
        try:
            return await waiter
        except BaseException:
            self.close()  # a timed-out or cancelled read leaves the dialogue out of step
            raise
        finally:
            timer.cancel()
            if reader.waiter is waiter:
                reader.waiter = None
