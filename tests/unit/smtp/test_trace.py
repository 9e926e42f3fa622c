"""Trace headers: the Received line per RFC 5321 §4.4 / RFC 3848, Message-ID and Date if missing."""

from __future__ import annotations

from mailrelay.core.address import Path
from mailrelay.core.headers import header_section
from mailrelay.smtp.handler import Identity, Session, Transaction
from mailrelay.smtp.trace import protocol_name, trace_headers

NOW = 1_795_000_000.0


def session(*, tls: bool, auth: bool) -> Session:
    s = Session("submission", "2001:db8::5", 40000, False, helo="client.example", esmtp=True)
    if tls:
        s.tls_version, s.tls_cipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
    if auth:
        s.identity = Identity("alice", object())
    return s


def txn(n: int = 1, *, utf8: bool = False) -> Transaction:
    params: dict[str, str | None] = {"SMTPUTF8": None} if utf8 else {}
    return Transaction(Path("a@example.net", params), [Path(f"r{i}@example.com", {}) for i in range(n)])


def test_protocol_names() -> None:
    assert protocol_name(session(tls=False, auth=False), txn()) == "ESMTP"
    assert protocol_name(session(tls=True, auth=False), txn()) == "ESMTPS"
    assert protocol_name(session(tls=False, auth=True), txn()) == "ESMTPA"
    assert protocol_name(session(tls=True, auth=True), txn()) == "ESMTPSA"
    assert protocol_name(session(tls=True, auth=True), txn(utf8=True)) == "UTF8SMTPSA"
    helo = session(tls=False, auth=False)
    helo.esmtp = False
    assert protocol_name(helo, txn()) == "SMTP"


def test_received_line_golden() -> None:
    out = trace_headers(session(tls=True, auth=True), txn(), b"Message-ID: <x@y>\r\nDate: x\r\n\r\nbody",
                        hostname="mx.example", queue_id="238FJGQ479HJF6JW", now=NOW)
    assert out == (
        b"Received: from client.example ([IPv6:2001:db8::5])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\tby mx.example (mailrelay) with ESMTPSA id 238FJGQ479HJF6JW\r\n"
        b"\tfor <r0@example.com>; Wed, 18 Nov 2026 11:06:40 +0000\r\n"
    )


def test_many_recipients_are_not_listed_and_missing_headers_are_added() -> None:
    out = trace_headers(session(tls=False, auth=False), txn(3), b"Subject: x\r\n\r\nbody",
                        hostname="mx.example", queue_id="ID1", now=NOW).decode()
    assert "for <" not in out
    assert "with ESMTP id ID1;\r\n\t" in out
    assert "Message-ID: <ID1@mx.example>\r\n" in out
    assert "\r\nDate: " in out


def test_header_section_stops_at_the_first_empty_line() -> None:
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nMessage-ID: in body\r\n") == b"A: 1\r\nB: 2\r\n"
    assert header_section(b"\r\nbody only") == b""
    body_mid = b"Subject: x\r\n\r\nMessage-ID: <fake>\r\n"
    assert b"Message-ID: <ID@h>" in trace_headers(session(tls=False, auth=False), txn(), body_mid,
                                                 hostname="h", queue_id="ID", now=NOW)
