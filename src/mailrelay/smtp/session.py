"""One SMTP session: what each command line means, from EHLO to QUIT, STARTTLS included.

`SMTPSession` is the protocol object the server makes for each connection. It reads and writes
through `smtp.base.SessionBase` and takes the AUTH and DATA phases from `smtp.auth` and
`smtp.data`; policy decisions come from `listener.handler` (mailrelay.smtp.handler.Handler).

Security:
- Input pipelined after STARTTLS is discarded and never runs inside TLS (CVE-2011-0411); all
  session knowledge is reset after the handshake (RFC 3207 §4.2).
- Command lines are limited to 512 octets (RFC 5321 §4.5.3.1.4; AUTH lines 12288, RFC 4954 §4),
  messages to SIZE, recipients to a count; errors beyond a limit close the connection.
- Past MAX_JUNK, commands that move no mail (NOOP, RSET, VRFY, HELP) count as errors, so a
  connection slot is not a parking place.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from typing import Any

from mailrelay.core import reply as R
from mailrelay.core.address import Path, parse_path
from mailrelay.core.reply import Refusal, Reply
from mailrelay.core.text import has_control_chars
from mailrelay.smtp.auth import AuthPhase
from mailrelay.smtp.base import AUTH_PASS, AUTH_PLAIN, AUTH_USER, CLOSED, CMD, HANDSHAKE, MAX_AUTH_LINE, MAX_ERRORS, TLS
from mailrelay.smtp.data import DataPhase
from mailrelay.smtp.handler import Session, Transaction

log = logging.getLogger("mailrelay.smtp")

MAX_COMMAND_LINE = 512  # RFC 5321 §4.5.3.1.4, including CRLF
MAX_JUNK = 100  # NOOP/RSET/VRFY/HELP before they count as errors (Postfix smtpd_junk_command_limit)

_HELO_OK = re.compile(r"[\x21-\x7e\x80-\U0010ffff]{1,255}\Z")

_BODY_VALUES = {"7BIT", "8BITMIME"}


class SMTPSession(AuthPhase, DataPhase):
    """The engine for one connection: the commands. Policy decisions come from `listener.handler`."""

    __slots__ = ()

    def _line(self, raw: bytes, wire_len: int) -> None:
        state = self._state
        if state in (AUTH_PLAIN, AUTH_USER, AUTH_PASS):
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
        self._state = TLS
        self._busy = True
        asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.listener.ssl_context
        assert ctx is not None
        # start_tls swaps the socket's protocol before its first await, so from here on all
        # input is decrypted TLS data (kept, answered after the handshake), never plaintext.
        self._state = HANDSHAKE
        try:
            transport = await loop.start_tls(self.transport, self, ctx, server_side=True,
                                             ssl_handshake_timeout=30.0)
        except Exception as exc:  # any failure ends this connection alone
            log.info("TLS handshake failed from %s: %s", self.session.peer_ip, exc,
                     extra={"client_ip": self.session.peer_ip})
            self._state = CLOSED
            self.transport.abort()
            self.server.release(self)  # asyncio reports no connection_lost for a failed handshake
            return
        if transport is None or self._state == CLOSED:
            self.server.release(self)
            return
        self.transport = transport
        # RFC 3207 §4.2: forget everything learnt before the handshake.
        s = self.session
        self.session = Session(s.listener, s.peer_ip, s.peer_port, s.trusted)
        self._note_tls()
        self._drop_txn()
        self._state = CMD
        self._resume(None)

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
        if self._state == CLOSED or self.txn is not txn:  # the client left meanwhile
            if txn.recipients:
                self.listener.handler.abandon(self.session, txn)
            return
        self._resume(reply)

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


def _printable(text: str) -> bool:
    """No control, format or separator characters (C1, U+2028, ...) beyond ASCII either."""
    return text.isascii() or not any(unicodedata.category(ch)[0] in "CZ" for ch in text)



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
