"""What a mail send's `asm.group_id` and `mail_settings.bypass_*` do at delivery, as SendGrid:
an address that left the message's unsubscribe group is dropped, and a bypass setting lets a
message through the lists it names (and only those)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mailrelay.accounts.asm import GroupService
from mailrelay.accounts.suppressions import SuppressionService
from mailrelay.store.schema import recipients
from tests.integration.delivery.conftest import RemoteMX, delivery_toml, mx_port, remote_mx
from tests.integration.http.conftest import APINode
from tests.support.dnsserver import FakeDNS

__all__ = ["mx_port", "remote_mx"]  # fixtures


def start(api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
          remote_mx: Callable[..., RemoteMX]) -> tuple[APINode, RemoteMX]:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    return api_factory(delivery_toml(fake_dns.address, mx_port)), mx


def send(api: APINode, to: list[str], **extra: Any) -> None:
    doc = {"personalizations": [{"to": [{"email": a} for a in to]}], "from": {"email": "alice@sender.test"},
           "subject": "Hi", "content": [{"type": "text/plain", "value": "Hello"}], **extra}
    with api.client(api.key()) as http:
        r = http.post("/v3/mail/send", json=doc)
    assert r.status_code == 202, r.text


def final_statuses(api: APINode, count: int) -> list[tuple[str, str]]:
    """(address, status) of every recipient, in the order sent, once all are final."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with api.node.app.engine.connect() as conn:
            rows = [(r.address, r.status) for r in conn.execute(
                sa.select(recipients.c.address, recipients.c.status).order_by(recipients.c.id))]
        if len(rows) == count and all(s in ("delivered", "dropped") for _, s in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"recipients still waiting: {rows}")


def test_an_address_that_left_the_messages_group_is_dropped_only_for_that_group(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    api, mx = start(api_factory, fake_dns, mx_port, remote_mx)
    alice = api.node.app.accounts.get("alice")
    assert alice is not None
    groups = GroupService(api.node.app.engine)
    news = groups.create(alice.id, "News")
    receipts = groups.create(alice.id, "Receipts")
    groups.add(alice.id, news.id, ["left@dest.test"])
    send(api, ["left@dest.test"], asm={"group_id": news.id})
    send(api, ["left@dest.test", "stays@dest.test"], asm={"group_id": receipts.id})
    assert final_statuses(api, 3) == [("left@dest.test", "dropped"), ("left@dest.test", "delivered"),
                                      ("stays@dest.test", "delivered")]
    assert sorted(r for m in mx.wait_for(1) for r in m.rcpt_tos) == ["left@dest.test", "stays@dest.test"]


def test_bypass_settings_skip_only_the_lists_they_name(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    api, mx = start(api_factory, fake_dns, mx_port, remote_mx)
    suppressions = SuppressionService(api.node.app.engine)
    suppressions.add("alice", "bounced@dest.test", kind="bounces")
    suppressions.add("alice", "unsub@dest.test", kind="unsubscribes")
    both = ["bounced@dest.test", "unsub@dest.test"]
    send(api, both, mail_settings={"bypass_bounce_management": {"enable": True}})
    assert final_statuses(api, 2) == [("bounced@dest.test", "delivered"), ("unsub@dest.test", "dropped")]
    send(api, both, mail_settings={"bypass_list_management": {"enable": True}})
    [first, second] = mx.wait_for(2)
    assert first.rcpt_tos == ["bounced@dest.test"] and sorted(second.rcpt_tos) == both
