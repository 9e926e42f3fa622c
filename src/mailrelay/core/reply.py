"""SMTP replies: a code, an enhanced status code (RFC 3463) and text, rendered in one place.

Handlers refuse by raising `Refusal(reply)`; the session loop catches it and writes the reply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str  # enhanced status code "x.y.z"; empty for greeting-style replies
    text: str

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)

    def render(self, *, enhanced: bool = True) -> bytes:
        """Wire form; multi-line text becomes a continuation reply (RFC 5321 §4.2.1)."""
        lines = self.text.split("\n") or [""]
        prefix = f"{self.status} " if enhanced and self.status else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}".replace("  ", " ")


class Refusal(Exception):
    """Raised by a handler or policy to answer with `reply` instead of going on."""

    def __init__(self, reply: Reply, *, disconnect: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.disconnect = disconnect


# RFC 5321 §4.2.2 / RFC 3463 — the replies mailrelay sends, by name.
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RCPT_OK = Reply(250, "2.1.5", "Recipient ok")
RESET_OK = Reply(250, "2.0.0", "Reset ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
VRFY_CANNOT = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
BYE = Reply(221, "2.0.0", "Bye")

# 4xx: temporary (RFC 3463 class 4)
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing transmission channel")
SHUTTING_DOWN = Reply(421, "4.3.2", "Server shutting down, try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
# RFC 3463 X.4.2: bad connection. A command line or a message that takes too long in all.
COMMAND_TIMEOUT = Reply(421, "4.4.2", "Command timeout, closing connection")
DATA_TIMEOUT = Reply(421, "4.4.2", "Message data timeout, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_YOU = Reply(421, "4.7.0", "Too many connections from your address, try again later")
AUTH_LOCKED_OUT = Reply(421, "4.7.0", "Too many failed logins from your address, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
STORAGE_ERROR = Reply(451, "4.3.0", "Queue storage unavailable, try again later")
# RFC 5321 §4.2.2 452 "insufficient system storage"; RFC 3463 §3.4 X.3.1 "mail system full".
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
AUTH_TEMP_FAIL = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")

# 5xx: permanent
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_HELO = Reply(501, "5.5.4", "Invalid HELO/EHLO name")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_BAD_PAYLOAD = Reply(501, "5.5.2", "Cannot decode AUTH payload")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
PARAM_NOT_IMPLEMENTED = Reply(504, "5.5.4", "Parameter not implemented")
AUTH_MECH_UNSUPPORTED = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_AUTHZID_REFUSED = Reply(535, "5.7.8", "Authorization identity must match the login")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
BARE_NEWLINE = Reply(550, "5.5.2", "Message contains bare CR or LF; lines must end with CRLF")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
