"""A sandbox capture of a message with a line over 998 octets: `inbox raw` is what delivery
would send (re-encoded, then signed), so its DKIM signature verifies; the stored message is
kept as received."""

from __future__ import annotations

from collections.abc import Callable

import dkim

from mailrelay.accounts.dnsrecords import dns_records
from mailrelay.sandbox.inbox import Inbox
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.integration.sandbox.test_capture import sandbox_node
from tests.integration.smtp.conftest import Node
from tests.support.dnsserver import FakeDNS

LONG_MSG = (b"From: Sandy <sandy@sender.test>\r\nTo: bob@dest.test\r\nSubject: one long line\r\n"
            b"Message-ID: <s2@sender.test>\r\n\r\n" + b"word " * 2400 + b"\r\n")


def test_captured_long_line_shows_what_would_be_sent(node_factory: Callable[..., Node], fake_dns: FakeDNS,
                                                    mx_port: int) -> None:
    node = sandbox_node(node_factory, fake_dns, mx_port)
    domain = node.app.domains.add("sender.test", "sandy")
    node.app.domains.mark_verified("sender.test")
    for record in dns_records(domain, hostname="mx.mailrelay.test"):
        if record.type == "TXT":
            fake_dns.txt(record.name, record.value)
    qid = submit(node, ["bob@dest.test"], LONG_MSG, "sandy@sender.test", user="sandy")
    wait_status(node, qid, {"bob@dest.test": "captured"})
    captured = Inbox(node.app.engine).get(qid)
    assert captured.data.endswith(LONG_MSG), "stored as received"
    assert max(len(line) for line in captured.raw.split(b"\r\n")) <= 998
    assert b"\r\nContent-Transfer-Encoding: quoted-printable\r\n" in captured.raw
    assert dkim.verify(captured.raw, dnsfunc=dns_lookup(fake_dns))
