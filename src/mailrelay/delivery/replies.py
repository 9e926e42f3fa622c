"""What the server we deliver to answers: its replies, parsed as bytes arrive, and the errors.

`ReplyReader` is the connection's asyncio protocol: it splits the incoming bytes into replies
(RFC 5321 §4.2: "ddd-" lines, then "ddd "), and hands them, in order, to the one read waiting
or to a queue for the next read (PIPELINING sends several commands before reading). `wire`
sends the commands and reads the replies from here.

Security: the peer is untrusted. Reply lines, replies, unsolicited replies and buffered bytes
are bounded (the MAX_* limits below); breaking a bound is a ProtocolError and the connection is
aborted. Reply text is decoded as UTF-8 with replacement: an undecodable byte raises nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple, cast

MAX_LINE = 8192  # bytes in one reply line; RFC 5321 §4.5.3.1.5 needs only 512
MAX_REPLY = 64 * 1024  # bytes in one (multi-line) reply
MAX_BUFFERED = 1024 * 1024  # bytes of replies received and not yet read, plus a partial line
MAX_UNSOLICITED = 100  # replies received beyond the commands sent


class RemoteReply(NamedTuple):
    """A reply from the server we deliver to (not ours: that is `core.reply.Reply`)."""

    code: int
    text: str  # the lines' text without their codes, stripped, joined by "\n"


class SMTPClientError(Exception):
    """Base of the SMTP client's own errors (`wire`, `replies`)."""


class ProtocolError(SMTPClientError):
    """The server broke the protocol; the connection is closed."""


class ConnectionLost(SMTPClientError, ConnectionError):
    """The peer closed or reset the connection while a reply or a write was due."""


class ReplyReader(asyncio.Protocol):
    """Parses replies as bytes arrive and hands them, in order, to one waiter or a queue."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.queue: deque[tuple[RemoteReply, int]] = deque()  # (reply, its size in bytes)
        self.queued_bytes = 0
        self.waiter: asyncio.Future[RemoteReply] | None = None
        self.outstanding = 1  # commands sent whose reply has not arrived; 1 for the greeting
        self.error: SMTPClientError | None = None  # set once the connection is unusable for good
        self.saw_421: RemoteReply | None = None  # RFC 5321 §3.8: the server is closing
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
        self._deliver(RemoteReply(code, text), size)

    def _deliver(self, reply: RemoteReply, size: int) -> None:
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
