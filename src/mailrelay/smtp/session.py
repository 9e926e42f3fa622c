"""One SMTP connection: the command loop, DATA, STARTTLS and AUTH, on asyncio.Protocol.

Commands are parsed straight out of `data_received` without a coroutine per connection, which
keeps an idle connection to a few kilobytes and the accept path short. Only AUTH (password
hashing in a thread) and the end of DATA (the group commit) wait; while they do, pipelined input
stays buffered and is processed in order afterwards.

Security:
- Only CRLF.CRLF ends DATA (RFC 5321 §4.1.1.4); bare CR or LF in a message is refused or
  normalised (Postfix 3.9 smtpd_forbid_bare_newline), so no SMTP smuggling through us.
- Input pipelined after STARTTLS is discarded and never runs inside TLS (CVE-2011-0411); all
  session knowledge is reset after the handshake (RFC 3207 §4.2).
- Command lines are limited to 512 octets (RFC 5321 §4.5.3.1.4; AUTH lines 12288, RFC 4954 §4),
  messages to SIZE, recipients to a count; errors beyond a limit close the connection.
- Time is limited three ways: without input (idle), for one command line from its first byte
  to its LF, and for DATA from the 354 to CRLF.CRLF, so trickling a byte at a time does not
  hold a connection forever. The server's sweep enforces them (`overdue`); no timer per byte.
- Credentials are decoded here and handed to the policy; they never reach a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from mailrelay.core import reply as R
from mailrelay.core.address import Path, has_control_chars, parse_path
from mailrelay.core.reply import Refusal, Reply
from mailrelay.smtp.handler import Identity, Session, Transaction
from mailrelay.smtp.limits import client_key
from mailrelay.store.health import StorageUnavailable

if TYPE_CHECKING:
    from mailrelay.smtp.server import Listener, SMTPServer

log = logging.getLogger("mailrelay.smtp")

MAX_COMMAND_LINE = 512  # RFC 5321 §4.5.3.1.4, including CRLF
MAX_AUTH_LINE = 12288  # RFC 4954 §4
MAX_ERRORS = 20  # like Postfix smtpd_hard_error_limit
MAX_JUNK = 100  # NOOP/RSET/VRFY/HELP before they count as errors (Postfix smtpd_junk_command_limit)
MAX_PENDING_INPUT = 65536  # input held while a step is awaited; beyond it we stop reading
TERMINATOR = b"\r\n.\r\n"

_CMD, _DATA, _AUTH_PLAIN, _AUTH_USER, _AUTH_PASS, _TLS, _HANDSHAKE, _CLOSED = range(8)
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_HELO_OK = re.compile(r"[\x21-\x7e\x80-\U0010ffff]{1,255}\Z")

_BODY_VALUES = {"7BIT", "8BITMIME"}


class SMTPSession(asyncio.Protocol):
    """The engine for one connection. Policy decisions come from `listener.handler`."""

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

    def __init__(self, server: SMTPServer, listener: Listener) -> None:
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
        self._state = _CMD
        self._busy = False
        self._paused = False
        self._throttled = False
        self._eof = False
        self._errors = 0
        self._junk = 0
        self._auth_user = ""
        self._out: list[bytes] = []
        self.last_activity = time.monotonic()

    # -- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        ip = str(peer[0])
        self.session = Session(self.listener.name, ip, int(peer[1]), self.listener.is_trusted(ip))
        self.client_key = client_key(ip)
        self._note_tls()
        refusal = self.server.admit(self)
        if refusal is not None:
            self._state = _CLOSED
            transport.write(refusal.render())  # type: ignore[attr-defined]
            transport.close()
            return
        transport.write(  # type: ignore[attr-defined]
            f"220 {self.server.hostname} {self.server.banner}\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
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
        if self._state == _CLOSED:
            return
        if self._state in (_TLS, _HANDSHAKE):
            # Mid-handshake nothing can be said in clear, and asyncio will not report the
            # connection as lost: give the slot back ourselves.
            self._state = _CLOSED
            self.transport.abort()
            self.server.release(self)
            return
        if reply is not None:
            self._out.append(reply.render())
        self._flush()
        self._state = _CLOSED
        self.transport.close()

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
        if self._state == _DATA:
            # Bytes buy time only up to the largest message we take: past it (a client that
            # never sends the terminator, however fast) the deadline stops moving.
            paid = min(self._data_bytes, _raw_limit(limits.max_message_size))
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
        if state in (_CLOSED, _TLS):
            return  # after STARTTLS: plaintext sent before the handshake is dropped
        if state == _DATA and not self._busy:
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
        while not self._busy and self._state not in (_CLOSED, _TLS):
            if self._state == _DATA:
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
                log.exception("internal error in SMTP session from %s", self.session.peer_ip)
                self.close(R.LOCAL_ERROR)

    def _error(self, reply: Reply, *, disconnect: bool = False) -> None:
        if reply.is_permanent:
            self._errors += 1
        if disconnect or self._errors >= MAX_ERRORS:
            if not disconnect:
                self._out.append(reply.render())
                reply = R.Reply(421, "4.7.0", "Too many errors, closing connection")
            self.close(reply)
            return
        self._out.append(reply.render())

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.render())

    def _flush(self) -> None:
        if self._out:
            out = self._out
            self._out = []
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out))

    # -- command dispatch -----------------------------------------------------------------

    def _line(self, raw: bytes, wire_len: int) -> None:
        state = self._state
        if state in (_AUTH_PLAIN, _AUTH_USER, _AUTH_PASS):
            self._auth_response(raw)
            return
        limit = MAX_AUTH_LINE if raw[:5].upper() == b"AUTH " else MAX_COMMAND_LINE
        if wire_len > limit:
            raise Refusal(R.LINE_TOO_LONG)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(R.SYNTAX_ERROR.with_text("Invalid UTF-8 in command")) from None
        if "\x00" in line or "\r" in line:
            raise Refusal(R.SYNTAX_ERROR.with_text("NUL or bare CR in command"))
        verb, _, arg = line.partition(" ")
        handler = _COMMANDS.get(verb.upper())
        if handler is None:
            raise Refusal(R.SYNTAX_ERROR)
        handler(self, arg.strip(" "))

    def _cmd_helo(self, arg: str, *, esmtp: bool = False) -> None:
        if not arg:
            raise Refusal(R.BAD_HELO.with_text("Syntax: EHLO hostname"))
        if not _HELO_OK.match(arg) or has_control_chars(arg) or not _printable(arg):
            raise Refusal(R.BAD_HELO)
        self._drop_txn()
        self.session.helo = arg
        self.session.esmtp = esmtp
        host = self.server.hostname
        if not esmtp:
            self._reply(Reply(250, "", host))
            return
        # RFC 1870 §4: SIZE is the limit for this client; once it has logged in (a client may
        # EHLO again after AUTH) the policy may know a lower one, such as its account's plan's.
        size = self.server.limits.max_message_size
        try:
            own = self.listener.handler.max_message_size(self.session)
        except Exception as exc:  # SIZE is advice (MAIL and DATA check): never worth the session
            log.warning("EHLO from %s: the policy's message size limit failed (%s: %s); announcing "
                        "the server's", self.session.peer_ip, type(exc).__name__, str(exc).partition("\n")[0])
            own = None
        if own is not None and 0 < own < size:
            size = own
        lines = [host, "PIPELINING", f"SIZE {size}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self._can_starttls():
            lines.append("STARTTLS")
        if self._auth_allowed():
            lines.append("AUTH PLAIN LOGIN")
        self._reply(Reply(250, "", "\n".join(lines)))

    def _cmd_ehlo(self, arg: str) -> None:
        self._cmd_helo(arg, esmtp=True)

    def _can_starttls(self) -> bool:
        return self.session.tls_version is None and self.listener.ssl_context is not None and \
            self.listener.tls == "starttls"

    def _auth_allowed(self) -> bool:
        return self.session.tls_version is not None or self.listener.allow_plaintext_auth

    def _cmd_starttls(self, arg: str) -> None:
        if self.session.tls_version is not None:
            raise Refusal(R.TLS_ALREADY_ACTIVE)
        if arg:
            raise Refusal(R.PARAM_SYNTAX.with_text("STARTTLS takes no parameters"))
        if not self._can_starttls():
            raise Refusal(R.NOT_IMPLEMENTED.with_text("STARTTLS not available"))
        self._buf.clear()  # CVE-2011-0411: pipelined plaintext never runs inside TLS
        self._reply(R.READY_TLS)
        self._flush()
        self._state = _TLS
        self._busy = True
        asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.listener.ssl_context
        assert ctx is not None
        # start_tls swaps the socket's protocol before its first await, so from here on all
        # input is decrypted TLS data (kept, answered after the handshake), never plaintext.
        self._state = _HANDSHAKE
        try:
            transport = await loop.start_tls(self.transport, self, ctx, server_side=True,
                                             ssl_handshake_timeout=30.0)
        except Exception as exc:  # any failure ends this connection alone
            log.info("TLS handshake failed from %s: %s", self.session.peer_ip, exc)
            self._state = _CLOSED
            self.transport.abort()
            self.server.release(self)  # asyncio reports no connection_lost for a failed handshake
            return
        if transport is None or self._state == _CLOSED:
            self.server.release(self)
            return
        self.transport = transport
        # RFC 3207 §4.2: forget everything learnt before the handshake.
        s = self.session
        self.session = Session(s.listener, s.peer_ip, s.peer_port, s.trusted)
        self._note_tls()
        self._drop_txn()
        self._state = _CMD
        self._resume(None)

    def _note_tls(self) -> None:
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_object is not None:
            self.session.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            self.session.tls_cipher = cipher[0] if cipher else None

    def _cmd_auth(self, arg: str) -> None:
        s = self.session
        if not s.esmtp:
            raise Refusal(R.NEED_HELO)
        if s.identity is not None:
            raise Refusal(R.ALREADY_AUTHENTICATED)
        if self.txn is not None:
            raise Refusal(R.BAD_SEQUENCE.with_text("AUTH not allowed during a mail transaction"))
        if not self._auth_allowed():
            raise Refusal(R.AUTH_ENCRYPTION_REQUIRED)
        if self.server.auth_limiter.locked(self.client_key):
            raise Refusal(R.AUTH_LOCKED_OUT, disconnect=True)
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        initial = initial.strip()
        if mech == "PLAIN":
            if initial:
                self._auth_plain(initial.encode("ascii", "replace"))
            else:
                self._state = _AUTH_PLAIN
                self._reply(Reply(334, "", ""))
        elif mech == "LOGIN":
            if initial:
                self._auth_user_received(initial.encode("ascii", "replace"))
            else:
                self._state = _AUTH_USER
                self._reply(Reply(334, "", "VXNlcm5hbWU6"))  # "Username:"
        else:
            raise Refusal(R.AUTH_MECH_UNSUPPORTED)

    def _auth_response(self, raw: bytes) -> None:
        state = self._state
        self._state = _CMD
        if raw.strip() == b"*":
            raise Refusal(R.AUTH_CANCELLED)
        if len(raw) + 2 > MAX_AUTH_LINE:
            raise Refusal(R.LINE_TOO_LONG)
        if state == _AUTH_PLAIN:
            self._auth_plain(raw)
        elif state == _AUTH_USER:
            self._auth_user_received(raw)
        else:
            password = _b64(raw)
            self._start_auth(self._auth_user, password.decode("utf-8", "replace"))

    def _auth_plain(self, payload: bytes) -> None:
        decoded = _b64(payload) if payload != b"=" else b""
        parts = decoded.split(b"\x00")
        if len(parts) != 3:
            raise Refusal(R.AUTH_BAD_PAYLOAD)
        authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != authcid:
            # RFC 4616 §2: we do not let one identity act as another.
            self._auth_failed(R.AUTH_AUTHZID_REFUSED)
            return
        self._start_auth(authcid, password)

    def _auth_user_received(self, payload: bytes) -> None:
        self._auth_user = _b64(payload).decode("utf-8", "replace")
        self._state = _AUTH_PASS
        self._reply(Reply(334, "", "UGFzc3dvcmQ6"))  # "Password:"

    def _start_auth(self, username: str, password: str) -> None:
        self._auth_user = ""
        if self.server.auth_limiter.locked(self.client_key):
            # Locked out while this exchange was open: no more guesses, right or wrong.
            raise Refusal(R.AUTH_LOCKED_OUT, disconnect=True)
        if not username or has_control_chars(username):
            self._auth_failed(R.AUTH_INVALID)
            return
        self._busy = True
        aw = self.listener.handler.authenticate(self.session, username, password)
        asyncio.get_running_loop().create_task(self._finish_auth(aw, username))

    async def _finish_auth(self, aw: Awaitable[Identity | None], username: str) -> None:
        try:
            identity = await aw
        except Exception:
            log.exception("authentication backend failed")
            self._resume(R.AUTH_TEMP_FAIL)
            return
        if self._state == _CLOSED:
            return
        if identity is None:
            log.info("AUTH failed from %s user=%r", self.session.peer_ip, username[:64])
            delay = self.server.auth_limiter.record_failure(self.client_key)
            if delay:
                await asyncio.sleep(delay)
            self._busy = False
            self._auth_failed(R.AUTH_INVALID, counted=True)
            self._resume(None)
            return
        if self.server.auth_limiter.locked(self.client_key):
            self.close(R.AUTH_LOCKED_OUT)  # fail closed: never confirm a guess after a lockout
            return
        self.session.identity = identity
        log.info("AUTH ok from %s user=%r", self.session.peer_ip, username[:64])
        self._resume(R.AUTH_OK)

    def _auth_failed(self, reply: Reply, *, counted: bool = False) -> None:
        if not counted:
            self.server.auth_limiter.record_failure(self.client_key)
        if self.server.auth_limiter.locked(self.client_key):
            self.close(R.AUTH_LOCKED_OUT)
            return
        self._error(reply)

    def _resume(self, reply: Reply | None) -> None:
        """Called when an awaited step ends: answer, then go on with buffered input."""
        if self._state == _CLOSED:
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

    def _cmd_mail(self, arg: str) -> None:
        s = self.session
        if not s.helo:
            raise Refusal(R.NEED_HELO)
        if self.txn is not None:
            raise Refusal(R.NESTED_MAIL)
        if self.listener.require_tls and s.tls_version is None:
            raise Refusal(R.TLS_REQUIRED)
        if self.listener.require_auth and s.identity is None:
            raise Refusal(R.AUTH_REQUIRED)
        path = parse_path(arg, "FROM", allow_null=True)
        declared: int | None = None
        for key, value in path.params.items():
            if key == "SIZE":
                if value is None or not (value.isascii() and value.isdigit()):
                    raise Refusal(R.PARAM_SYNTAX.with_text("SIZE needs a number"))
                declared = int(value)
                if declared > self.server.limits.max_message_size:
                    raise Refusal(R.MESSAGE_TOO_BIG)
            elif key == "BODY":
                if (value or "").upper() not in _BODY_VALUES:
                    raise Refusal(R.PARAM_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME"))
            elif key == "SMTPUTF8":
                if value is not None:
                    raise Refusal(R.PARAM_SYNTAX.with_text("SMTPUTF8 takes no value"))
            elif key == "AUTH":
                pass  # RFC 4954 §5: accepted, not trusted
            else:
                raise Refusal(Reply(555, "5.5.4", f"Unsupported MAIL parameter {key[:20]}"))
        if not s.esmtp and path.params:
            raise Refusal(Reply(555, "5.5.4", "Parameters need EHLO"))
        txn = Transaction(path, declared_size=declared)
        self.listener.handler.check_sender(s, txn)
        self.txn = txn
        self._reply(R.SENDER_OK)

    def _cmd_rcpt(self, arg: str) -> None:
        txn = self.txn
        if txn is None:
            raise Refusal(R.NEED_MAIL)
        if len(txn.recipients) >= self.server.limits.max_recipients:
            raise Refusal(R.TOO_MANY_RECIPIENTS)
        path = parse_path(arg, "TO", allow_null=False)
        if not txn.smtputf8 and not path.address.isascii():
            raise Refusal(R.SMTPUTF8_REQUIRED)
        if path.params:
            raise Refusal(Reply(555, "5.5.4", f"Unsupported RCPT parameter {next(iter(path.params))[:20]}"))
        pending = self.listener.handler.check_recipient(self.session, txn, path)
        if pending is None:
            txn.recipients.append(path)
            self._reply(R.RCPT_OK)
            return
        self._busy = True
        fut = asyncio.ensure_future(pending)
        fut.add_done_callback(lambda f: self._rcpt_checked(txn, path, f))

    def _rcpt_checked(self, txn: Transaction, path: Path, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            reply = R.LOCAL_ERROR
        elif (exc := fut.exception()) is not None:
            if isinstance(exc, Refusal):
                reply = exc.reply
            else:
                log.error("recipient check failed: %s", exc)
                reply = R.LOCAL_ERROR
        else:
            txn.recipients.append(path)
            reply = R.RCPT_OK
        if self._state == _CLOSED or self.txn is not txn:  # the client left meanwhile
            if txn.recipients:
                self.listener.handler.abandon(self.session, txn)
            return
        self._resume(reply)

    def _cmd_data(self, arg: str) -> None:
        if arg:
            raise Refusal(R.PARAM_SYNTAX.with_text("DATA takes no parameters"))
        if self.txn is None:
            raise Refusal(R.NEED_MAIL)
        if not self.txn.recipients:
            raise Refusal(Reply(554, "5.5.1", "No valid recipients"))
        self._reply(R.START_DATA)
        self._state = _DATA
        self._data_started = time.monotonic()
        self._data_bytes = 0
        self._data = bytearray(b"\r\n")  # so a "." first line is found like any other
        self._too_big = False

    def _count_junk(self) -> None:
        """Past MAX_JUNK, commands that move no mail count as errors (a slot is not a parking)."""
        self._junk += 1
        if self._junk > MAX_JUNK:
            self._errors += 1
            if self._errors >= MAX_ERRORS:
                raise Refusal(R.Reply(421, "4.7.0", "Too many commands without mail, closing connection"),
                              disconnect=True)

    def _cmd_rset(self, arg: str) -> None:
        self._count_junk()
        self._drop_txn()
        self._reply(R.RESET_OK)

    def _cmd_noop(self, arg: str) -> None:
        self._count_junk()
        self._reply(R.NOOP_OK)

    def _cmd_quit(self, arg: str) -> None:
        self.close(R.BYE)

    def _cmd_vrfy(self, arg: str) -> None:
        self._count_junk()
        self._reply(R.VRFY_CANNOT)

    def _cmd_help(self, arg: str) -> None:
        self._count_junk()
        self._reply(Reply(214, "2.0.0", "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT"))

    def _cmd_unimplemented(self, arg: str) -> None:
        raise Refusal(R.NOT_IMPLEMENTED)

    # -- DATA -----------------------------------------------------------------------------

    def _feed_data(self, chunk: bytes) -> None:
        data = self._data
        start = max(0, len(data) - 4)
        data += chunk
        self._data_bytes += len(chunk)
        end = data.find(TERMINATOR, start)
        if end < 0:
            if len(data) - 2 > _raw_limit(self.server.limits.max_message_size):
                # Too big: keep counting to the terminator but hold only its possible start.
                self._too_big = True
                del data[:-4]
            return
        rest = bytes(data[end + 5 :])
        del data[end + 2 :]
        self._state = _CMD
        if rest:
            self._buf[:0] = rest
        self._end_of_data()

    def _end_of_data(self) -> None:
        txn = self.txn
        data = self._data
        self._data = bytearray()
        if self._too_big or txn is None:
            self._drop_txn()
            self._reply(R.MESSAGE_TOO_BIG)
            return
        crlf = data.count(b"\r\n")
        bare = data.count(b"\n") != crlf or data.count(b"\r") != crlf
        if bare and self.server.limits.bare_newline == "reject":
            self._drop_txn()
            log.info("bare CR/LF in DATA from %s; message refused", self.session.peer_ip)
            self._error(R.BARE_NEWLINE)
            return
        if b"\r\n." in data:
            # RFC 5321 §4.5.2: drop the first "." of every line that starts with one. Only
            # CRLF-started lines were stuffed by the client, so this comes before normalising.
            data = bytearray(data.replace(b"\r\n.", b"\r\n"))
        if bare:
            data = bytearray(_NEWLINES.sub(b"\r\n", data))
        body = bytes(data[2:])
        if len(body) > self.server.limits.max_message_size:
            self._drop_txn()
            self._reply(R.MESSAGE_TOO_BIG)
            return
        self._busy = True
        try:
            aw = self.listener.handler.accept(self.session, txn, body)
        except Refusal as refusal:
            self._busy = False
            self._drop_txn()
            self._error(refusal.reply, disconnect=refusal.disconnect)
            return
        except Exception:
            # A bug in the policy costs this message, not the session: left busy, the
            # transaction's reservations would never be given back (and this may run straight
            # from data_received, outside _process's guard).
            log.exception("accepting a message from %s failed", self.session.peer_ip)
            self._busy = False
            self._drop_txn()
            self._reply(R.LOCAL_ERROR)
            return
        fut = asyncio.ensure_future(aw)
        fut.add_done_callback(self._accepted)

    def _accepted(self, fut: asyncio.Future[Reply]) -> None:
        if fut.cancelled():
            reply = R.LOCAL_ERROR
            self._drop_txn()
        elif (exc := fut.exception()) is not None:
            if isinstance(exc, Refusal):
                reply = exc.reply
            else:
                if not isinstance(exc, StorageUnavailable):  # an outage is logged once, by the writer
                    log.error("storing message failed: %s", exc)
                reply = R.STORAGE_ERROR
            self._drop_txn()
        else:
            reply = fut.result()
            self.txn = None
        self._resume(reply)
        if self.server.draining and not self.in_transaction and self._state != _CLOSED:
            self.close(R.SHUTTING_DOWN)


def _raw_limit(max_message_size: int) -> int:
    """The most DATA octets a message within the limit can take on the wire: dot-stuffing and
    a terminator split across reads make it a little larger than the message (the exact check
    comes after unstuffing)."""
    return max_message_size + max_message_size // 64 + 1024


def _printable(text: str) -> bool:
    """No control, format or separator characters (C1, U+2028, ...) beyond ASCII either."""
    return text.isascii() or not any(unicodedata.category(ch)[0] in "CZ" for ch in text)


def _b64(payload: bytes) -> bytes:
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(R.AUTH_BAD_PAYLOAD) from None


_COMMANDS: dict[str, Any] = {
    "EHLO": SMTPSession._cmd_ehlo,
    "HELO": SMTPSession._cmd_helo,
    "STARTTLS": SMTPSession._cmd_starttls,
    "AUTH": SMTPSession._cmd_auth,
    "MAIL": SMTPSession._cmd_mail,
    "RCPT": SMTPSession._cmd_rcpt,
    "DATA": SMTPSession._cmd_data,
    "RSET": SMTPSession._cmd_rset,
    "NOOP": SMTPSession._cmd_noop,
    "QUIT": SMTPSession._cmd_quit,
    "VRFY": SMTPSession._cmd_vrfy,
    "HELP": SMTPSession._cmd_help,
    "EXPN": SMTPSession._cmd_unimplemented,
    "BDAT": SMTPSession._cmd_unimplemented,
    "ETRN": SMTPSession._cmd_unimplemented,
    "TURN": SMTPSession._cmd_unimplemented,
}
