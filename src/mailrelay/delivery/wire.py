"""The SMTP client on the wire: a small asyncio client for outbound delivery, with PIPELINING
(RFC 2920). It speaks the protocol and nothing more; `transfer` decides what to send and what
the replies mean for each recipient.

With PIPELINING one transaction costs two round trips (MAIL+RCPT...+DATA, then the body), as
in Postfix, where a one-reply-per-write client needs 3 + recipients. Replies are matched to
commands strictly in order; replies nobody waits for are queued and handed to the next read
(the parsing and the queue are `replies.ReplyReader`).

Security: the peer is untrusted. Reply lines, replies and buffered bytes are bounded
(`replies`); a STARTTLS 220 followed by anything already received is refused (plaintext
injected before the handshake, CVE-2011-0411); CR, LF, NUL and other controls never reach the
wire inside an argument; the body is sent with every line ending made CRLF, NUL removed and
dot-stuffing, so only CRLF "." CRLF ends it (no smuggling through a lenient server
downstream). Passwords appear in no message or exception.

Exceptions (the first three defined in `replies`)::

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
from collections.abc import Sequence
from dataclasses import dataclass

from mailrelay.core.text import has_control_chars
from mailrelay.delivery.replies import ConnectionLost, ProtocolError, RemoteReply, ReplyReader, SMTPClientError

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class TransactionReplies:
    """The replies of one mail transaction, as far as it went."""

    mail: RemoteReply
    rcpts: list[RemoteReply]  # one per recipient in order; empty when nothing was sent or read after MAIL
    data: RemoteReply | None  # reply to DATA, None if DATA was not sent
    final: RemoteReply | None  # reply after the body's final ".", None if the body was not sent


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
    if has_control_chars(value):
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


def _expire(waiter: asyncio.Future[RemoteReply], what: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply to {what} within {timeout:g} s"))


class SMTPClient:
    """One connection to an SMTP server: greeting, EHLO, STARTTLS, AUTH, transactions."""

    def __init__(self, transport: asyncio.Transport, reader: ReplyReader, command_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._reader = reader
        self._timeout = command_timeout
        self._tls: str | None = None
        self.extensions: dict[str, str] = {}

    @classmethod
    async def connect(cls, host: str, port: int, *, source_address: str | None = None,
                      connect_timeout: float = 30.0, command_timeout: float = 300.0) -> tuple[SMTPClient, RemoteReply]:
        """Connect (from source_address if given) and read the greeting, whatever its code."""
        loop = asyncio.get_running_loop()
        local = (source_address, 0) if source_address else None
        try:
            transport, reader = await asyncio.wait_for(
                loop.create_connection(ReplyReader, host, port, local_addr=local), connect_timeout)
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

    async def ehlo(self, name: str) -> RemoteReply:
        """EHLO, or HELO when EHLO is refused (RFC 5321 §4.1.4); records the extensions."""
        arg = _encode_arg(name, "ascii")
        self.extensions = {}
        reply = await self._command(b"EHLO " + arg, "EHLO")
        if 500 <= reply.code <= 599:
            return await self._command(b"HELO " + arg, "HELO")
        if reply.code == 250:
            self.extensions = _parse_extensions(reply.text)
        return reply

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> RemoteReply:
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

    async def login(self, username: str, password: str) -> RemoteReply:
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
            return RemoteReply(504, "5.5.4 no supported AUTH mechanism")
        if reply.code == 334:
            # The server wants more than we have: cancel so the dialogue is in sync (RFC 4954 §4).
            reply = await self._command(b"*", "AUTH cancellation")
        return reply

    async def rset(self) -> RemoteReply:
        return await self._command(b"RSET", "RSET")

    async def transaction(self, sender: str, recipients: Sequence[str], data: bytes, *,
                          options: Sequence[str] = (), utf8: bool = False) -> TransactionReplies:
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

    async def _pipelined(self, mail_cmd: bytes, rcpt_cmds: list[bytes], data: bytes) -> TransactionReplies:
        # RFC 2920 §3.1: MAIL, RCPT and DATA may go in one group; DATA is last.
        self._send(b"".join([mail_cmd, *rcpt_cmds, b"DATA\r\n"]), len(rcpt_cmds) + 2)
        mail = await self._read("MAIL FROM")
        if mail.code == 421 or (mail.code >= 300 and self._reader.error is not None and not self._reader.queue):
            # The server is closing (RFC 5321 §3.8): its reason is the news, not the lost connection.
            return TransactionReplies(mail, [], None, None)
        rcpts = [await self._read("RCPT TO") for _ in rcpt_cmds]
        data_reply = await self._read("DATA")
        if data_reply.code != 354:
            return TransactionReplies(mail, rcpts, data_reply, None)
        if not (200 <= mail.code <= 299 and any(200 <= r.code <= 299 for r in rcpts)):
            # RFC 2920 §3.1: DATA accepted with no valid recipient; send an empty message
            # to end it, the server must refuse it.
            self._send(b".\r\n", 1)
            await self._read("end of data")
            return TransactionReplies(mail, rcpts, data_reply, None)
        return TransactionReplies(mail, rcpts, data_reply, await self._send_body(data))

    async def _lock_step(self, mail_cmd: bytes, rcpt_cmds: list[bytes], data: bytes) -> TransactionReplies:
        self._send(mail_cmd, 1)
        mail = await self._read("MAIL FROM")
        if not 200 <= mail.code <= 299:
            return TransactionReplies(mail, [], None, None)
        rcpts: list[RemoteReply] = []
        for cmd in rcpt_cmds:
            self._send(cmd, 1)
            rcpts.append(await self._read("RCPT TO"))
        if not any(200 <= r.code <= 299 for r in rcpts):
            return TransactionReplies(mail, rcpts, None, None)
        data_reply = await self._command(b"DATA", "DATA")
        if data_reply.code != 354:
            return TransactionReplies(mail, rcpts, data_reply, None)
        return TransactionReplies(mail, rcpts, data_reply, await self._send_body(data))

    async def _send_body(self, data: bytes) -> RemoteReply:
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

    async def _command(self, line: bytes, what: str) -> RemoteReply:
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

    async def _read(self, what: str, timeout: float | None = None) -> RemoteReply:
        """The next reply, in order; `what` names the command in a timeout's message."""
        reader = self._reader
        if reader.queue:
            reply, size = reader.queue.popleft()
            reader.queued_bytes -= size
            return reply
        if reader.error is not None:
            self.close()
            raise reader.error
        waiter: asyncio.Future[RemoteReply] = self._loop.create_future()
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
