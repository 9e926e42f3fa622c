"""Reading the few header fields mailrelay acts on (From:), without parsing whole messages."""

from __future__ import annotations

import email.utils
import re

_FROM = re.compile(rb"(?im)^from[ \t]*:(.*(?:\r\n[ \t].*)*)")


def header_section(data: bytes) -> bytes:
    """The header section of a message (RFC 5322 §2.1): up to and including the first CRLF
    of the empty line that ends it; the whole message if there is no body."""
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


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
