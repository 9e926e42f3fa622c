"""One SMTP connection's bytes: reading, replying, the time limits and closing, on asyncio.Protocol.

Input is parsed straight out of `data_received` without a coroutine per connection, which
keeps an idle connection to a few kilobytes and the accept path short. Only AUTH (password
hashing in a thread) and the end of DATA (the group commit) wait; while they do, pipelined input
stays buffered and is processed in order afterwards (`_busy`, `_resume`).

`SessionBase` is the bottom of the session: the command loop's input side, up to one line (or
one piece of DATA) at a time. What a line means is `mailrelay.smtp.session.SMTPSession`'s, with
the AUTH phase (`smtp.auth`) and the DATA phase (`smtp.data`) beside it.

Security:
- Command lines are limited (see `smtp.session`); a line with no end in sight is dropped as
  it comes and answered once it ends; errors beyond MAX_ERRORS close the connection.
- Time is limited three ways: without input (idle), for one command line from its first byte
  to its LF, and for DATA from the 354 to CRLF.CRLF, so trickling a byte at a time does not
  hold a connection forever. The server's sweep enforces them (`overdue`); no timer per byte.
- A client that does not read its replies is not read either (`pause_writing`); input held
  while a step is awaited is bounded (MAX_PENDING_INPUT), beyond it TCP pushes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from mailrelay import metrics
from mailrelay.core import reply as R
from mailrelay.core.reply import Refusal, Reply
from mailrelay.smtp.handler import Session, Transaction
from mailrelay.smtp.limits import AuthFailureLimiter, client_key
from mailrelay.smtp.listener import EngineLimits, Listener

log = logging.getLogger("mailrelay.smtp")

MAX_AUTH_LINE = 12288  # RFC 4954 §4: the longest line we read at all (AUTH and its responses)
MAX_ERRORS = 20  # like Postfix smtpd_hard_error_limit
MAX_PENDING_INPUT = 65536  # input held while a step is awaited; beyond it we stop reading
_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx")  # reply code // 100

# What the connection is reading: commands, DATA, an AUTH response, nothing until the TLS
# handshake (_TLS: after the 220 to STARTTLS; _HANDSHAKE: during it), nothing ever again.
CMD, DATA, AUTH_PLAIN, AUTH_USER, AUTH_PASS, TLS, HANDSHAKE, CLOSED = range(8)


class Host(Protocol):
    """What a session asks of the server that accepted it (mailrelay.smtp.server.SMTPServer)."""

    hostname: str
    banner: str
    limits: EngineLimits
    auth_limiter: AuthFailureLimiter
    draining: bool

    def admit(self, session: SessionBase) -> Reply | None:
        """Count a new connection; a Reply means refuse it."""

    def release(self, session: SessionBase) -> None:
        """Forget a connection that has ended."""


class SessionBase(asyncio.Protocol):
    """One connection's state and its input and output. Policy decisions come from
    `listener.handler`; the server is the `Host`."""

    __slots__ = (
        "_auth_user",
        "_buf",
        "_busy",
        "_data",
        "_data_bytes",
        "_data_started",
        "_discarding",
        "_eof",
        "_errors",
        "_junk",
        "_line_started",
        "_out",
        "_paused",
        "_state",
        "_throttled",
        "_too_big",
        "client_key",
        "last_activity",
        "listener",
        "server",
        "session",
        "transport",
        "txn",
    )

    def __init__(self, server: Host, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: Any = None
        self.session: Session = Session(listener.name, "", 0, False)
        self.txn: Transaction | None = None
        self.client_key = ""  # what per-client limits count by (see limits.client_key)
        self._buf = bytearray()
        self._data = bytearray()
        self._data_started = 0.0  # when the 354 was sent
        self._data_bytes = 0  # octets of DATA received so far
        self._line_started = 0.0  # first byte of the command line being read; 0: none
        self._too_big = False
        self._discarding = False
        self._state = CMD
        self._busy = False
        self._paused = False
        self._throttled = False
        self._eof = False
        self._errors = 0
        self._junk = 0
        self._auth_user = ""
        self._out: list[bytes] = []
        self.last_activity = time.monotonic()

    # -- what the layers above provide ----------------------------------------------------

    def _line(self, raw: bytes, wire_len: int) -> None:
        """Act on one command line, without its line end (SMTPSession)."""
        raise NotImplementedError

    def _feed_data(self, chunk: bytes) -> None:
        """Take octets of DATA (smtp.data.DataPhase)."""
        raise NotImplementedError

    # -- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        ip = str(peer[0])
        self.session = Session(self.listener.name, ip, int(peer[1]), self.listener.is_trusted(ip))
        self.client_key = client_key(ip)
        self._note_tls()
        metrics.count(metrics.connections, self.listener.name)
        refusal = self.server.admit(self)
        if refusal is not None:
            self._state = CLOSED
            transport.write(self._said(refusal))  # type: ignore[attr-defined]
            transport.close()
            return
        metrics.count(metrics.replies, self.listener.name, "2xx")  # the greeting
        transport.write(  # type: ignore[attr-defined]
            f"220 {self.server.hostname} {self.server.banner}\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        if not self._busy:  # a step in flight (RCPT check, accept) settles the transaction itself
            self._drop_txn()
        self.server.release(self)

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its commands until it does.
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if not self._throttled:
            self.transport.resume_reading()

    def close(self, reply: Reply | None = None) -> None:
        if self._state == CLOSED:
            return
        if self._state in (TLS, HANDSHAKE):
            # Mid-handshake nothing can be said in clear, and asyncio will not report the
            # connection as lost: give the slot back ourselves.
            self._state = CLOSED
            self.transport.abort()
            self.server.release(self)
            return
        if reply is not None:
            self._out.append(self._said(reply))
        self._flush()
        self._state = CLOSED
        self.transport.close()

    def _note_tls(self) -> None:
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_object is not None:
            self.session.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            self.session.tls_cipher = cipher[0] if cipher else None

    def _drop_txn(self) -> None:
        """End the transaction without an accepted message: the policy gives back what it
        held for it (e.g. quota reserved at RCPT)."""
        txn, self.txn = self.txn, None
        if txn is not None and txn.recipients:
            self.listener.handler.abandon(self.session, txn)

    @property
    def in_transaction(self) -> bool:
        return self.txn is not None or self._busy

    def overdue(self, now: float) -> Reply | None:
        """The 421 to close with if a time limit has passed at `now`, else None (the server's
        sweep asks every session periodically)."""
        limits = self.server.limits
        if now - self.last_activity > limits.idle_timeout:
            return R.IDLE_TIMEOUT
        if self._busy:
            return None  # our turn (AUTH, a commit): the client is not the one taking time
        if self._state == DATA:
            # Bytes buy time only up to the largest message we take: past it (a client that
            # never sends the terminator, however fast) the deadline stops moving.
            paid = min(self._data_bytes, raw_limit(limits.max_message_size))
            allowance = paid / limits.min_data_rate if limits.min_data_rate else 0.0
            if now - self._data_started > limits.data_deadline + allowance:
                return R.DATA_TIMEOUT
        elif self._line_started and now - self._line_started > limits.command_deadline:
            return R.COMMAND_TIMEOUT
        return None

    # -- input ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        state = self._state
        if state in (CLOSED, TLS):
            return  # after STARTTLS: plaintext sent before the handshake is dropped
        if state == DATA and not self._busy:
            self._feed_data(data)
        else:
            self._buf += data
        if not self._busy:
            self._process()
        elif len(self._buf) > MAX_PENDING_INPUT and not self._throttled:
            # Waiting for AUTH or a commit: hold at most this much, let TCP push back the rest.
            self._throttled = True
            self.transport.pause_reading()
        self._flush()

    def eof_received(self) -> bool | None:
        # A half-closed client (shutdown(SHUT_WR), `nc -N`) still gets the replies to what it
        # sent, the 250 for its message above all; we close once they are written.
        self._eof = True
        if not self._busy:
            self._finish_eof()
        return True

    def _finish_eof(self) -> None:
        self._process()
        if not self._busy:
            self.close()

    def _process(self) -> None:
        """Run complete command lines from the buffer until it is empty or we must wait."""
        buf = self._buf
        while not self._busy and self._state not in (CLOSED, TLS):
            if self._state == DATA:
                if not buf:
                    return
                pending = bytes(buf)
                buf.clear()
                self._feed_data(pending)
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_AUTH_LINE:
                    # No end in sight: drop what we have, answer once the line ends.
                    self._discarding = True
                    buf.clear()
                if (buf or self._discarding) and not self._line_started:
                    self._line_started = self.last_activity  # the command deadline runs
                return
            raw = bytes(buf[:nl])
            del buf[: nl + 1]
            self._line_started = 0.0
            if self._discarding:
                self._discarding = False
                self._error(R.LINE_TOO_LONG)
                continue
            line = raw[:-1] if raw.endswith(b"\r") else raw
            try:
                self._line(line, len(raw) + 1)
            except Refusal as refusal:
                self._error(refusal.reply, disconnect=refusal.disconnect)
            except Exception:
                # A bug must cost one session, never the server or a silent hang.
                log.exception("internal error in SMTP session from %s", self.session.peer_ip,
                              extra={"client_ip": self.session.peer_ip})
                self.close(R.LOCAL_ERROR)

    def _resume(self, reply: Reply | None) -> None:
        """Called when an awaited step ends: answer, then go on with buffered input."""
        if self._state == CLOSED:
            return
        self._busy = False
        if reply is not None:
            self._reply(reply)
        self._process()
        if self._throttled and not self._busy and len(self._buf) <= MAX_PENDING_INPUT:
            self._throttled = False
            if not self._paused:
                self.transport.resume_reading()
        self._flush()
        if self._eof and not self._busy:
            self.close()

    # -- output ---------------------------------------------------------------------------

    def _error(self, reply: Reply, *, disconnect: bool = False) -> None:
        if reply.is_permanent:
            self._errors += 1
        if disconnect or self._errors >= MAX_ERRORS:
            if not disconnect:
                self._out.append(self._said(reply))
                reply = R.Reply(421, "4.7.0", "Too many errors, closing connection")
            self.close(reply)
            return
        self._out.append(self._said(reply))

    def _said(self, reply: Reply) -> bytes:
        """`reply` on the wire, counted by class."""
        metrics.count(metrics.replies, self.listener.name, _CLASSES[reply.code // 100])
        return reply.render()

    def _reply(self, reply: Reply) -> None:
        self._out.append(self._said(reply))

    def _flush(self) -> None:
        if self._out:
            out = self._out
            self._out = []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out))


def raw_limit(max_message_size: int) -> int:
    """The most DATA octets a message within the limit can take on the wire: dot-stuffing and
    a terminator split across reads make it a little larger than the message (the exact check
    comes after unstuffing)."""
    return max_message_size + max_message_size // 64 + 1024
