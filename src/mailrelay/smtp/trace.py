"""Trace headers we add in front of a stored message: Received, and Message-ID/Date if missing.

Built from the engine's Session and Transaction, for sent mail (submission) and received mail
(inbound) alike. Stored bodies are never rewritten (STYLE habit 8): these lines are kept apart
as a prefix.
"""

from __future__ import annotations

import re
import time

from mailrelay.core.dates import rfc5322_date
from mailrelay.core.headers import header_section
from mailrelay.smtp.handler import Session, Transaction

_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:")
_DATE = re.compile(rb"(?im)^date[ \t]*:")


def protocol_name(session: Session, txn: Transaction) -> str:
    """RFC 3848 / RFC 6531 §3.7.4 `with` keyword: ESMTP + S (TLS) + A (AUTH), UTF8 variants."""
    if not session.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if txn.smtputf8 else "ESMTP"
    return base + ("S" if session.tls_version else "") + ("A" if session.identity else "")


def ip_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def received(session: Session, txn: Transaction, *, hostname: str, queue_id: str,
             now: float | None = None, client_name: str | None = None) -> bytes:
    """The Received line (RFC 5321 §4.4) we prepend, folded over several lines. With
    `client_name` (received mail: the confirmed reverse DNS name, or "unknown") it reads
    `from HELO (NAME [IP])`, as Postfix writes it."""
    date = rfc5322_date(now if now is not None else time.time())
    client = ip_literal(session.peer_ip) if client_name is None else f"{client_name} {ip_literal(session.peer_ip)}"
    parts = [f"Received: from {session.helo} ({client})"]
    if session.tls_version:
        parts.append(f"\t(using {session.tls_version} with cipher {session.tls_cipher})")
    parts.append(f"\tby {hostname} (mailrelay) with {protocol_name(session, txn)} id {queue_id}")
    if len(txn.recipients) == 1:
        parts.append(f"\tfor <{txn.recipients[0].address}>; {date}")
    else:
        parts[-1] += ";"
        parts.append(f"\t{date}")
    return ("\r\n".join(parts) + "\r\n").encode("utf-8")


def trace_headers(session: Session, txn: Transaction, body: bytes, *, hostname: str,
                  queue_id: str, now: float) -> bytes:
    headers = header_section(body)
    out = received(session, txn, hostname=hostname, queue_id=queue_id, now=now)
    if not _MESSAGE_ID.search(headers):
        out += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode()
    if not _DATE.search(headers):
        out += f"Date: {rfc5322_date(now)}\r\n".encode()
    return out
