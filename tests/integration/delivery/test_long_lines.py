"""A submitted message with a 10,000-octet line (RFC 5322 §2.1.1 allows 998) is delivered with
nothing over 998 on the wire, decodes to the same body, and carries a DKIM signature that
verifies over what was sent; the stored message is not rewritten. aiosmtpd, like many
receivers, refuses longer lines ("500 Line too long"), so sent as stored it would bounce."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from typing import Any

import dkim

from mailrelay.accounts.domains import dns_records
from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.support.dnsserver import FakeDNS

BODY = b"Hello,\r\n" + b"<div>" + b"<span>minified</span> " * 455 + b"</div>\r\n.dot line\r\nBye.\r\n"
LONG_MSG = (b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: one long line\r\n"
            b"Message-ID: <long1@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"\r\n" + BODY)


def test_long_line_is_re_encoded_signed_and_delivered(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                      remote_mx: Callable[..., RemoteMX]) -> None:
    assert max(len(line) for line in BODY.split(b"\r\n")) >= 10_000
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = node_factory(delivery_toml(fake_dns.address, mx_port, "[submission]\nrequire_own_domain = true"))
    domain = node.app.domains.add("sender.test", "alice")
    for record in dns_records(domain, hostname="mx.mailrelay.test"):
        if record.type == "TXT":
            fake_dns.txt(record.name, record.value)
    qid = submit(node, ["bob@dest.test"], LONG_MSG)
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    [got] = mx.messages

    assert max(len(line) for line in got.data.split(b"\r\n")) <= 998
    received = email.message_from_bytes(got.data, policy=email.policy.default)
    assert received["Content-Transfer-Encoding"] == "quoted-printable"
    assert received.get_payload(decode=True) == BODY
    assert got.data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(got.data, dnsfunc=dns_lookup(fake_dns)), "signed over what was sent"
    stored = node.stored()[0]
    assert bytes(stored["body"]) == LONG_MSG, "the stored message is never rewritten"
