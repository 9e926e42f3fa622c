"""DKIM on delivered mail, verified by dkimpy against the key published in the test DNS, and
submission.require_own_domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dkim
import dns.resolver
import pytest

from mailrelay.accounts.dnsrecords import dns_records
from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.delivery.test_delivery import MSG, submit, wait_status
from tests.support.dnsserver import FakeDNS


def dns_lookup(fake_dns: FakeDNS) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc, asking the test DNS server over the network like a receiver would."""
    host, port = fake_dns.address.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


@pytest.mark.parametrize("algorithm", ["rsa", "both"])
def test_delivered_message_carries_a_verifiable_dkim_signature(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX],
        algorithm: str) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = node_factory(delivery_toml(fake_dns.address, mx_port, "[submission]\nrequire_own_domain = true"))
    domain = node.app.domains.add("sender.test", "alice", algorithm=algorithm)
    node.app.domains.mark_verified("sender.test")
    for record in dns_records(domain, hostname="mx.mailrelay.test"):
        if record.type == "TXT":
            fake_dns.txt(record.name, record.value)
    qid = submit(node, ["bob@dest.test"])
    [got] = mx.wait_for(1)
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    assert got.data.startswith(b"DKIM-Signature: ")
    assert got.data.count(b"DKIM-Signature: ") == (2 if algorithm == "both" else 1)
    assert b"d=sender.test" in got.data and b"c=relaxed/relaxed" in got.data
    assert dkim.verify(got.data, dnsfunc=dns_lookup(fake_dns)), "the RSA signature verifies"
    # the stored message itself is never rewritten
    assert b"DKIM-Signature" not in bytes(node.stored()[0]["body"])


def test_unowned_from_domain_is_refused_when_required(node_factory: Any, fake_dns: FakeDNS, mx_port: int) -> None:
    node = node_factory(delivery_toml(fake_dns.address, mx_port, "[submission]\nrequire_own_domain = true"))
    client = node.submission()
    client.ehlo()
    client.mail("alice@sender.test")
    client.rcpt("bob@dest.test")
    code, text = client.data(MSG)
    assert code == 550 and text.startswith(b"5.7.1"), text
    assert b"sender.test" in text and b"mailrelay domain add" in text
    client.quit()
    node.app.domains.add("sender.test", "bob")  # someone else's domain does not help alice
    node.app.domains.mark_verified("sender.test")
    client = node.submission()
    client.ehlo()
    client.mail("alice@sender.test")
    client.rcpt("bob@dest.test")
    assert client.data(MSG)[0] == 550
    assert node.stored() == []


def test_owned_domain_and_its_subdomains_are_accepted(node_factory: Any, fake_dns: FakeDNS, mx_port: int) -> None:
    node = node_factory(delivery_toml(fake_dns.address, mx_port,
                                      "[submission]\nrequire_own_domain = true\n[delivery]\nenabled = false"))
    node.app.domains.add("sender.test", "alice")
    node.app.domains.mark_verified("sender.test")
    submit(node, ["bob@dest.test"])
    submit(node, ["bob@dest.test"], msg=MSG.replace(b"From: alice@sender.test", b"From: News <n@news.sender.test>"))
    assert len(node.stored()) == 2
