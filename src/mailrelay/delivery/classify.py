"""The one place that decides what a delivery attempt's result means: delivered, deferred, bounced.

Errors are temporary unless proven permanent: only a 5xx reply (from the remote server, or a
5xx `Reply` that our own policy raised as a `Refusal`) bounces, and not 503, which blames us.
A refused or reset connection, a timeout, a TLS failure or a DNS failure defers, whatever its
cause, so a network outage never turns into bounces. Hard bounces (RFC 3463 X.1.x: the mailbox or domain does not exist)
are the ones that go to the suppression list.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from mailrelay.core.reply import Refusal
from mailrelay.delivery.replies import ProtocolError, SMTPClientError
from mailrelay.resolver.base import DNSTemporaryError

Outcome = Literal["delivered", "deferred", "bounced"]

# RFC 3463 §2: class "." subject "." detail; subject and detail are 1-3 digits.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:[ \t]+|\Z)")
_SPACE = re.compile(r"\s+")
# C0 controls and DEL, C1 controls, and lone surrogates left by a lenient decoder.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_LOOKS_LIKE_REPLY = re.compile(r"\d{3}(?:[ -]|\Z)")

MAX_DIAGNOSTIC = 1000  # characters; a chatty multi-line 5xx must not fill the database

# Hard bounces (RFC 3463 §3.2; 5.1.10 from RFC 7505, null MX): the address itself is bad, so
# sending to it again can only hurt the sender's reputation.
HARD_BOUNCE_STATUSES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})

# RFC 5321 §4.2.3: 503 "bad sequence of commands" says our client sent something out of order
# (or skipped a step a smarthost wants, such as AUTH): our fault, not the address's. It defers,
# so the mail survives until the fault is fixed, and the caller logs it loudly.
BAD_SEQUENCE = 503

_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN,
                          errno.ENETDOWN, errno.EADDRNOTAVAIL})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an attempt came to for one recipient.

    `diagnostic` is one line. When `remote`, it is the server's reply as "550 5.1.1 text"
    (code, the enhanced code if the server sent one, the text), ready for a DSN's
    `Diagnostic-Code: smtp; ...`; otherwise it is our own prose, which never starts with a
    three-digit code.
    """

    outcome: Outcome
    status: str  # RFC 3463 enhanced status code "x.y.z"
    diagnostic: str
    remote: bool = False


def classify_reply(code: int, text: str) -> Verdict:
    """A remote SMTP reply: 2xx delivered, 4xx deferred, 5xx bounced except 503 (our own
    protocol error, deferred as 4.x.x), anything else deferred.

    `text` is the reply text without the code (multi-line text joined by newlines, as
    `replies.RemoteReply` gives it); an RFC 2034 enhanced code at its start sets the status.
    """
    lines = text.split("\n") if text else [""]
    enhanced: tuple[str, str, str] | None = None
    clean = []
    for i, line in enumerate(lines):
        m = _ENHANCED.match(line.lstrip())
        if m is not None:
            if i == 0:
                enhanced = (m.group(1), m.group(2), m.group(3))
            line = line.lstrip()[m.end():]  # RFC 2034 §4: every line repeats the code
        clean.append(line)
    words = _one_line(" ".join(clean))
    said = " ".join(p for p in (str(code), ".".join(enhanced) if enhanced else "", words) if p)
    diagnostic = _truncate(said)

    klass = code // 100
    if code == BAD_SEQUENCE:
        status = "4.5.0" if enhanced is None else f"4.{enhanced[1]}.{enhanced[2]}"  # X.5.0: protocol
        return Verdict("deferred", status, diagnostic, remote=True)
    if klass == 2:
        outcome: Outcome = "delivered"
    elif klass == 4:
        outcome = "deferred"
    elif klass == 5:
        outcome = "bounced"
    else:
        # RFC 3463 X.5.0: other protocol status. A 1xx, 3xx or 6xx where a final answer was
        # due is a broken server, not a verdict on the address.
        return Verdict("deferred", "4.5.0", diagnostic, remote=True)
    # RFC 3463 §2: the class must agree with the reply code; when a server gets that wrong
    # (550 4.1.1), the basic code decides, as it does for the outcome.
    status = f"{klass}.0.0" if enhanced is None else f"{klass}.{enhanced[1]}.{enhanced[2]}"
    return Verdict(outcome, status, diagnostic, remote=True)


def classify_error(exc: BaseException, *, connecting: bool = False) -> Verdict:
    """An exception from an attempt: deferred, unless it carries a 5xx reply.

    Our own `Refusal` carries a reply and is classified by it (replies from a remote server go
    through `classify_reply`); everything else is a temporary failure with the closest RFC 3463
    code. `connecting`: the error came before the server's greeting (a timeout there means no
    answer from the host, X.4.1).
    """
    if isinstance(exc, Refusal):
        # Our own decision (null MX, policy): its reply decides, but the text is ours.
        v = classify_reply(exc.reply.code, exc.reply.status + " " + exc.reply.text)
        return Verdict(v.outcome, v.status, _prose(exc.reply.text or v.diagnostic))
    if isinstance(exc, DNSTemporaryError):
        return _defer("4.4.3", "DNS lookup failed", exc)  # X.4.3: routing server failure
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _defer("4.7.5", "TLS certificate verification failed", exc)  # X.7.5: crypto
    if isinstance(exc, ssl.SSLError):
        return _defer("4.7.5", "TLS handshake failed", exc)
    if isinstance(exc, TimeoutError):
        if connecting:
            return _defer("4.4.1", "connection timed out", exc)  # X.4.1: no answer from host
        return _defer("4.4.2", "timed out", exc)  # X.4.2: bad connection
    if isinstance(exc, socket.gaierror):
        # The system resolver cannot tell "no such host" from "no answer now" reliably;
        # nonexistent domains are decided from our resolver's answers instead.
        return _defer("4.4.3", "host name lookup failed", exc)
    if isinstance(exc, ConnectionRefusedError):
        return _defer("4.4.1", "connection refused", exc)
    if isinstance(exc, (ConnectionError, EOFError)):
        return _defer("4.4.2", "connection lost", exc)
    if isinstance(exc, ProtocolError):
        return _defer("4.5.0", "SMTP protocol error", exc)  # X.5.0: other protocol status
    if isinstance(exc, SMTPClientError):
        return _defer("4.5.0", "SMTP error", exc)
    if isinstance(exc, OSError):
        if exc.errno in _UNREACHABLE:
            return _defer("4.4.1", "host unreachable", exc)
        return _defer("4.4.0", "network error", exc)  # X.4.0: other network status
    if isinstance(exc, Exception):
        return _defer("4.3.0", "internal error", exc)  # X.3.0: other mail system status
    return _defer("4.3.0", "delivery interrupted", exc)  # CancelledError, KeyboardInterrupt


def is_hard_bounce(verdict: Verdict) -> bool:
    """A permanent failure saying the address is bad (5.1.x): the address gets suppressed."""
    return verdict.outcome == "bounced" and verdict.status in HARD_BOUNCE_STATUSES


def is_remote_reply(diagnostic: str) -> bool:
    """True when `diagnostic` is an SMTP reply ("550 ..."), as `Verdict.diagnostic` writes one
    when `remote`; the DSN builder uses it to pick the `smtp` diagnostic type."""
    return _LOOKS_LIKE_REPLY.match(diagnostic) is not None


def _defer(status: str, what: str, exc: BaseException) -> Verdict:
    detail = _one_line(str(exc)) or type(exc).__name__
    return Verdict("deferred", status, _prose(f"{what} ({detail})"))


def _prose(text: str) -> str:
    """Our own diagnostic: one line, bounded, never mistakable for a remote reply."""
    text = _truncate(_one_line(text)) or "no detail"
    return f"error: {text}" if is_remote_reply(text) else text


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 3] + "..."
