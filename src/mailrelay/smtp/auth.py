"""The AUTH phase of a session (RFC 4954): PLAIN and LOGIN, the exchange and the verdict.

Security:
- AUTH is offered and taken only over TLS, unless the listener allows plaintext.
- Credentials are decoded here and handed to the policy; they never reach a log line.
- Failed logins are counted per client address (smtp.limits.AuthFailureLimiter): slowed
  down, then locked out; a lockout that starts while a check runs is never answered with a
  success (fail closed), and a locked-out address is disconnected at its next AUTH.
- One identity never acts as another (an authzid other than the authcid is refused).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable

from mailrelay import metrics
from mailrelay.core import reply as R
from mailrelay.core.reply import Refusal, Reply
from mailrelay.core.text import has_control_chars
from mailrelay.smtp.base import AUTH_PASS, AUTH_PLAIN, AUTH_USER, CLOSED, CMD, MAX_AUTH_LINE, SessionBase
from mailrelay.smtp.handler import Identity

log = logging.getLogger("mailrelay.smtp")

# An API key's shape (`SG.<id>.<secret>`, `MR.<id>.<secret>`): a client that sends its key as
# the user name (instead of user `apikey`) must not have it logged.
_KEY_SHAPED = re.compile(r"[A-Za-z]{2}\.[A-Za-z0-9_-]{8,}\.")


def logged_user(username: str) -> str:
    """The user name as the log shows it: at most 64 characters, never a key's secret."""
    return "(an API key, not logged)" if _KEY_SHAPED.match(username) else username[:64]


class AuthPhase(SessionBase):
    """AUTH PLAIN and AUTH LOGIN, with the check itself off the event loop (the policy's)."""

    __slots__ = ()

    def _auth_allowed(self) -> bool:
        return self.session.tls_version is not None or self.listener.allow_plaintext_auth

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
                self._state = AUTH_PLAIN
                self._reply(Reply(334, "", ""))
        elif mech == "LOGIN":
            if initial:
                self._auth_user_received(initial.encode("ascii", "replace"))
            else:
                self._state = AUTH_USER
                self._reply(Reply(334, "", "VXNlcm5hbWU6"))  # "Username:"
        else:
            raise Refusal(R.AUTH_MECH_UNSUPPORTED)

    def _auth_response(self, raw: bytes) -> None:
        """A line answering our 334: the PLAIN payload, the LOGIN user name or password."""
        state = self._state
        self._state = CMD
        if raw.strip() == b"*":
            raise Refusal(R.AUTH_CANCELLED)
        if len(raw) + 2 > MAX_AUTH_LINE:
            raise Refusal(R.LINE_TOO_LONG)
        if state == AUTH_PLAIN:
            self._auth_plain(raw)
        elif state == AUTH_USER:
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
        self._state = AUTH_PASS
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
        except Refusal as refusal:  # the policy's own answer (e.g. 454 while its database is away)
            self._resume(refusal.reply)
            return
        except Exception:
            log.exception("authentication backend failed")
            self._resume(R.AUTH_TEMP_FAIL)
            return
        if self._state == CLOSED:
            return
        if identity is None:
            user = logged_user(username)
            log.info("AUTH failed from %s user=%r", self.session.peer_ip, user,
                     extra={"event": "auth_failed", "client_ip": self.session.peer_ip, "user": user})
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
        user = logged_user(username)
        log.info("AUTH ok from %s user=%r", self.session.peer_ip, user,
                 extra={"event": "auth_ok", "client_ip": self.session.peer_ip, "user": user})
        self._resume(R.AUTH_OK)

    def _auth_failed(self, reply: Reply, *, counted: bool = False) -> None:
        metrics.count(metrics.auth_failures, self.listener.name)
        if not counted:
            self.server.auth_limiter.record_failure(self.client_key)
        if self.server.auth_limiter.locked(self.client_key):
            self.close(R.AUTH_LOCKED_OUT)
            return
        self._error(reply)


def _b64(payload: bytes) -> bytes:
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(R.AUTH_BAD_PAYLOAD) from None
