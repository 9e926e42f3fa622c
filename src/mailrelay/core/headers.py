"""Reading the few header fields mailrelay acts on, without parsing whole messages: the header
section, From: (sender domains), and Message-ID and Subject as events and the inbox show them
(for sent and received mail alike)."""

from __future__ import annotations

import contextlib
import email.errors
import email.header
import email.utils
import re

from mailrelay.core.address import domain_of
from mailrelay.core.domains import bare_domain
from mailrelay.core.text import CONTROL

# The field and its continuation lines (RFC 5322 §2.2.3). "[^\r\n]*", not ".*": "." takes the
# CR of CRLF, after which no continuation line can follow and a folded From: was cut short.
_FROM = re.compile(rb"(?im)^from[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)")
_FOLD = re.compile(rb"\r?\n")

# Octets of an unfolded From: value parsed at most. One mailbox with its display name fits one
# 998-octet line (RFC 5322 §2.1.1); email.utils.getaddresses grows faster than the length on
# some input ("@@@...", ",,,...": 9 s for 3 MB) and recurses once per nested comment, so a
# longer value is not parsed at all. Cutting it instead could leave a prefix of the real
# domain ("example.com" of "example.com.evil.test") that passes a sender-domain check.
MAX_FROM = 4096

MAX_SUBJECT = 500  # characters of a Subject kept for events
# Characters of a Subject decoded at most: enough for MAX_SUBJECT characters even in the
# smallest encoded words ("=?utf-8?q?a?= "), while email.header's cost grows with the square
# of the length (a 4 MB Subject held the event loop for minutes).
MAX_SUBJECT_DECODED = 16 * MAX_SUBJECT
MAX_MESSAGE_ID = 998  # RFC 5322 §2.1.1 line limit; the column's size

_CONTINUATION = re.compile(rb"\r?\n(?=[ \t])")  # a line break of RFC 5322 §2.2.3 folding


def header_section(data: bytes) -> bytes:
    """The header section of a message (RFC 5322 §2.1): everything before the first empty line,
    with the line ending of its last field; b"" when the message starts with an empty line."""
    if data.startswith((b"\r\n", b"\n")):
        return b""
    candidates = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    if not candidates:
        return data  # no body at all: the message is only headers
    end = min(candidates)
    return data[: end + (2 if data.startswith(b"\r\n", end) else 1)]


def from_field(data: bytes) -> bytes | None:
    """The unfolded value of the first From: field, None when there is none."""
    m = _FROM.search(header_section(data))
    return None if m is None else _FOLD.sub(b"", m.group(1))


def from_domains(data: bytes) -> list[str]:
    """Domains of the mailboxes in the first From: field, lower-case (RFC 5322 §3.6.2); none
    when the field is missing, longer than MAX_FROM octets, or nested too deep to parse."""
    value = from_field(data)
    if value is None or len(value) > MAX_FROM:
        return []
    try:
        pairs = email.utils.getaddresses([value.decode("utf-8", "replace")])
    except RecursionError:  # "((((...": one Python frame per comment level
        return []
    out = []
    for _, addr in pairs:
        domain = bare_domain(domain_of(addr).strip())
        if "@" in addr and domain:
            out.append(domain)
    return out


def message_id_value(raw: bytes) -> str | None:
    """A Message-ID field's value as written (unfolded, without control characters); None when
    empty or longer than MAX_MESSAGE_ID."""
    value = CONTROL.sub("", _unfold(raw))
    return value if value and len(value) <= MAX_MESSAGE_ID else None


def subject_value(raw: bytes) -> str | None:
    """A Subject field's value, RFC 2047 encoded words decoded (as written when they do not
    decode), control characters as spaces, at most MAX_SUBJECT characters; None when empty."""
    value = _unfold(raw)
    if "=?" in value:  # RFC 2047 encoded words
        if len(value) > MAX_SUBJECT_DECODED:  # cut between words, not inside one
            cut = value.rfind(" ", 0, MAX_SUBJECT_DECODED)
            value = value[:cut if cut > 0 else MAX_SUBJECT_DECODED]
        # HeaderParseError (bad base64, "=?utf-8?b?a?=") is no ValueError; else keep it as written
        with contextlib.suppress(ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
            value = str(email.header.make_header(email.header.decode_header(value)))
    value = CONTROL.sub(" ", value)
    return value[:MAX_SUBJECT] if value else None


def _unfold(raw: bytes) -> str:
    return _CONTINUATION.sub(b"", raw).strip().decode("utf-8", "replace")
