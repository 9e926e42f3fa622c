"""Reading the few header fields mailrelay acts on (From:), without parsing whole messages."""

from __future__ import annotations

import email.utils
import re

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
        domain = addr.rpartition("@")[2].strip().lower().rstrip(".")
        if "@" in addr and domain:
            out.append(domain)
    return out
