"""The DATA phase of a session: the message up to CRLF.CRLF, unstuffed, handed to the policy.

Security:
- Only CRLF.CRLF ends DATA (RFC 5321 §4.1.1.4); bare CR or LF in a message is refused or
  normalised (Postfix 3.9 smtpd_forbid_bare_newline), so no SMTP smuggling through us.
- A message over the size limit is read to its end but not kept (only the terminator's
  possible start is held), then refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from mailrelay.core import reply as R
from mailrelay.core.reply import Refusal, Reply
from mailrelay.smtp.base import CLOSED, CMD, DATA, SessionBase, raw_limit
from mailrelay.store.health import StorageUnavailable

log = logging.getLogger("mailrelay.smtp")

TERMINATOR = b"\r\n.\r\n"

_NEWLINES = re.compile(rb"\r\n|\r|\n")


class DataPhase(SessionBase):
    """From the 354 to the reply for the message (the policy's `accept`, a group commit)."""

    __slots__ = ()

    def _cmd_data(self, arg: str) -> None:
        if arg:
            raise Refusal(R.PARAM_SYNTAX.with_text("DATA takes no parameters"))
        if self.txn is None:
            raise Refusal(R.NEED_MAIL)
        if not self.txn.recipients:
            raise Refusal(Reply(554, "5.5.1", "No valid recipients"))
        self._reply(R.START_DATA)
        self._state = DATA
        self._data_started = time.monotonic()
        self._data_bytes = 0
        self._data = bytearray(b"\r\n")  # so a "." first line is found like any other
        self._too_big = False

    def _feed_data(self, chunk: bytes) -> None:
        data = self._data
        start = max(0, len(data) - 4)
        data += chunk
        self._data_bytes += len(chunk)
        end = data.find(TERMINATOR, start)
        if end < 0:
            if len(data) - 2 > raw_limit(self.server.limits.max_message_size):
                # Too big: keep counting to the terminator but hold only its possible start.
                self._too_big = True
                del data[:-4]
            return
        rest = bytes(data[end + 5 :])
        del data[end + 2 :]
        self._state = CMD
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
            log.info("bare CR/LF in DATA from %s; message refused", self.session.peer_ip,
                     extra={"client_ip": self.session.peer_ip})
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
            log.exception("accepting a message from %s failed", self.session.peer_ip,
                          extra={"client_ip": self.session.peer_ip})
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
        if self.server.draining and not self.in_transaction and self._state != CLOSED:
            self.close(R.SHUTTING_DOWN)
