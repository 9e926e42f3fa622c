"""A submitted message with a 10,000-octet line (RFC 5322 §2.1.1 allows 998) is delivered with
nothing over 998 on the wire, decodes to the same body, and carries a DKIM signature that
verifies over what was sent; the stored message is not rewritten. aiosmtpd, like many
receivers, refuses longer lines ("500 Line too long"), so sent as stored it would bounce."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Callable
from typing import Any

import dkim
import pytest

from mailrelay.accounts.dnsrecords import dns_records
from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.integration.sandbox.test_capture import sandbox_node
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
    node.app.domains.mark_verified("sender.test")
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


UUENCODED = (b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: left as it is\r\n"
             b"Message-ID: <long2@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
             b"\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
             + b"M" * 1200 + b"\r\n--b--\r\n")


def long_line_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mailrelay.delivery" and r.levelno == logging.WARNING and "998" in r.getMessage()]


def test_a_line_that_cannot_be_fitted_is_logged(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                remote_mx: Callable[..., RemoteMX],
                                                caplog: pytest.LogCaptureFixture) -> None:
    remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = node_factory(delivery_toml(fake_dns.address, mx_port))
    with caplog.at_level(logging.WARNING, logger="mailrelay.delivery"):
        fitted = submit(node, ["bob@dest.test"], LONG_MSG)
        wait_status(node, fitted, {"bob@dest.test": "delivered"})
        assert long_line_warnings(caplog) == [], "nothing to say when every line fits"
        qid = submit(node, ["bob@dest.test"], UUENCODED)
        # aiosmtpd, like many receivers, refuses the line ("500 Line too long").
        wait_status(node, qid, {"bob@dest.test": "bounced"})
    assert long_line_warnings(caplog) == [
        f"{qid}: lines over 998 octets remain after re-encoding (unknown encoding x-uuencode)"]


def test_a_sandbox_capture_logs_it_too(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                       caplog: pytest.LogCaptureFixture) -> None:
    node = sandbox_node(node_factory, fake_dns, mx_port)
    msg = UUENCODED.replace(b"alice@", b"sandy@").replace(b"To: bob", b"X-Token: " + b"t" * 1000 + b"\r\nTo: bob")
    with caplog.at_level(logging.WARNING, logger="mailrelay.delivery"):
        qid = submit(node, ["bob@dest.test"], msg, "sandy@sender.test", user="sandy")
        wait_status(node, qid, {"bob@dest.test": "captured"})
    assert long_line_warnings(caplog) == [f"{qid}: lines over 998 octets remain after re-encoding "
                                          "(unknown encoding x-uuencode; unfoldable header X-Token)"]
