"""Reading the few header fields mailrelay acts on (From:), without parsing whole messages."""

from __future__ import annotations

import email.utils
import re

_FROM = re.compile(rb"(?im)^from[ \t]*:(.*(?:\r\n[ \t].*)*)")


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


def from_domains(data: bytes) -> list[str]:
    """Domains of the mailboxes in the first From: field, lower-case (RFC 5322 §3.6.2)."""
    m = _FROM.search(header_section(data))
    if m is None:
        return []
    value = m.group(1).replace(b"\r\n", b"").decode("utf-8", "replace")
    out = []
    for _, addr in email.utils.getaddresses([value]):
        domain = addr.rpartition("@")[2].strip().lower().rstrip(".")
        if "@" in addr and domain:
            out.append(domain)
    return out
