"""SendGrid's Python client → our API → a loopback MX, end to end: the mail arrives intact and
DKIM-signed, and its events reach the account's webhook carrying the X-Message-Id and the
categories, as with SendGrid."""

from __future__ import annotations

import email
import email.policy
import os
from collections.abc import Callable

import dkim
from sendgrid import SendGridAPIClient

from mailrelay.accounts.dnsrecords import dns_records
from mailrelay.events.hooks import WebhookService
from tests.integration.delivery.conftest import RemoteMX, delivery_toml, mx_port, remote_mx
from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.integration.events.conftest import EventReceiver, receiver
from tests.integration.http.conftest import APINode
from tests.integration.http.test_sendgrid_client import rich_mail
from tests.support.dnsserver import FakeDNS

__all__ = ["mx_port", "receiver", "remote_mx"]  # fixtures

HOOKS = "[webhooks]\nretry_first = 0.2\nretry_max = 0.4\ntimeout = 2\n"


def test_a_rich_mail_is_delivered_intact_signed_and_evented(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX], receiver: EventReceiver) -> None:
    mx = remote_mx("127.0.0.2")
    for domain in ("example.net", "example.org"):
        fake_dns.mx(domain, (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = api_factory(delivery_toml(fake_dns.address, mx_port, HOOKS + "[submission]\nrequire_own_domain = true"))
    app = api.node.app
    domain = app.domains.add("example.com", "alice")
    app.domains.mark_verified("example.com")
    for record in dns_records(domain, hostname="mx.mailrelay.test"):
        if record.type == "TXT":
            fake_dns.txt(record.name, record.value)
    WebhookService(app.engine).set_url("alice", receiver.url)

    data = os.urandom(5000)
    response = SendGridAPIClient(api_key=api.key(), host=api.url).send(rich_mail(data))
    assert response.status_code == 202
    x_message_id = response.headers["X-Message-Id"]

    got = mx.wait_for(2)
    assert sorted(r for m in got for r in m.rcpt_tos) == ["ann@example.net", "ben@example.org"]
    for m in got:
        assert dkim.verify(m.data, dnsfunc=dns_lookup(fake_dns)), "DKIM verifies at the receiver"
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        [attachment] = [p for p in msg.walk() if p.get_filename() == "invoice.bin"]
        assert attachment.get_content() == data, "the attachment arrives byte-exact"
        assert msg.get_body(("plain",)).get_content().strip() == "Thanks for your order."

    events = receiver.wait(lambda evs: sum(e["event"] == "delivered" for e in evs) == 2)
    delivered = [e for e in events if e["event"] == "delivered"]
    for e in delivered:
        assert e["sg_message_id"].startswith(f"{x_message_id}.")
        assert sorted(e["category"]) == ["orders", "receipts"]
        assert e["campaign"] == "autumn"  # custom args at the top level, as SendGrid posts them
    assert {e["order"] for e in delivered} == {"1", "2"}
