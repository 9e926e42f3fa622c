"""The event webhook end to end: submit on 587, deliver to aiosmtpd servers on 127.0.0.X, and
receive the events on a real HTTP server on loopback: signed, in order, none lost."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY

from mailrelay.events import signing
from mailrelay.events.hooks import WebhookService
from mailrelay.store.schema import events
from tests.integration.delivery.conftest import Behaviour, RemoteMX, delivery_toml
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.events.conftest import EventReceiver as Receiver
from tests.integration.smtp.conftest import Node
from tests.support.dnsserver import FakeDNS

HOOKS = """
[webhooks]
retry_first = 0.2
retry_max = 0.4
timeout = 2
batch_size = 3
"""


def message(n: int, api: bytes = b"") -> bytes:
    return (b"From: alice@sender.test\r\nTo: someone@dest.test\r\nSubject: test " + str(n).encode() + b"\r\n"
            + api + b"Message-ID: <m" + str(n).encode() + b"@sender.test>\r\n\r\nHello.\r\n")


def start(node_factory: Callable[..., Node], fake_dns: FakeDNS, mx_port: int,
          remote_mx: Callable[..., RemoteMX], behaviour: Behaviour | None = None) -> tuple[Node, RemoteMX]:
    mx = remote_mx("127.0.0.2", behaviour)
    remote_mx("127.0.0.6")  # the sender's MX, for bounces
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = node_factory(delivery_toml(fake_dns.address, mx_port, HOOKS))
    return node, mx


def secret_of(node: Node) -> str:
    secret = WebhookService(node.app.engine).get("alice").secret
    assert secret is not None
    return secret


def assert_signed(receiver: Receiver, secret: str) -> None:
    for post in receiver.posts:
        h = post.headers
        assert h["content-type"] == "application/json"
        assert h["user-agent"].startswith("mailrelay/")
        assert signing.verify(secret, h["x-mailrelay-timestamp"], post.body, h["x-mailrelay-signature"],
                              now=time.time()), "every POST carries a valid signature"
        assert not signing.verify("wrong", h["x-mailrelay-timestamp"], post.body, h["x-mailrelay-signature"],
                                  now=time.time())


def _posts(outcome: str) -> float:
    return REGISTRY.get_sample_value("mailrelay_webhook_posts_total", {"outcome": outcome}) or 0.0


def event_ids(evs: list[dict[str, Any]]) -> list[int]:
    return [int(e["sg_event_id"].removeprefix("mr-")) for e in evs]


def names_for(evs: list[dict[str, Any]], qid: str) -> list[str]:
    return [e["event"] for e in evs if e["mailrelay_message_id"] == qid]


def test_delivered_deferred_and_bounced_events_arrive_signed_and_in_order(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX],
        receiver: Receiver) -> None:
    node, mx = start(node_factory, fake_dns, mx_port, remote_mx,
                     Behaviour(reject={"nobody@dest.test"}, defer_rcpt={"later@dest.test"}))
    WebhookService(node.app.engine).set_url("alice", receiver.url)
    api = (b'X-SMTPAPI: {"category": ["welcome", "eu"],\r\n  "unique_args": {"user_id": "42", "n": 7,'
           b' "event": "not-ours"}}\r\n')
    delivered = submit(node, ["bob@dest.test"], message(1, api))
    deferred = submit(node, ["later@dest.test"], message(2))
    bounced = submit(node, ["nobody@dest.test"], message(3))
    got = receiver.wait(lambda evs: names_for(evs, delivered) == ["processed", "delivered"]
                        and names_for(evs, deferred)[:2] == ["processed", "deferred"]
                        and names_for(evs, bounced) == ["processed", "bounce"])
    assert_signed(receiver, secret_of(node))
    ids = event_ids(got)
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "one account's events arrive in order, once"

    by_name = {(e["mailrelay_message_id"], e["event"]): e for e in got}
    ok = by_name[delivered, "delivered"]
    assert ok["email"] == "bob@dest.test" and ok["smtp-id"] == "<m1@sender.test>"
    assert ok["category"] == ["welcome", "eu"]
    assert ok["user_id"] == "42" and ok["n"] == 7, "unique_args at the top level, as SendGrid does"
    assert ok["event"] == "delivered", "a unique_arg never overrides our own fields"
    assert ok["response"].startswith("250") and ok["attempt"] == "1" and ok["mx_host"] == "mx.dest.test"
    assert ok["sg_message_id"] == delivered and isinstance(ok["timestamp"], int)
    assert by_name[delivered, "processed"]["category"] == ["welcome", "eu"]
    later = by_name[deferred, "deferred"]
    assert later["response"].startswith("450") and later["attempt"] == "1" and "category" not in later
    bounce = by_name[bounced, "bounce"]
    assert bounce["status"] == "5.1.1" and bounce["reason"].startswith("550") and bounce["type"] == "bounce"
    # the X-SMTPAPI header never leaves: not in what the remote MX received
    [received] = [m for m in mx.wait_for(1) if "bob@dest.test" in m.rcpt_tos]
    assert b"X-SMTPAPI" not in received.data and b"Subject: test 1" in received.data


def test_receiver_failing_for_a_while_delays_events_but_loses_none(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX],
        receiver: Receiver) -> None:
    receiver.fail_first = 4
    posts_before = {o: _posts(o) for o in ("ok", "5xx")}  # this process's counters (/metrics)
    node, _ = start(node_factory, fake_dns, mx_port, remote_mx)
    WebhookService(node.app.engine).set_url("alice", receiver.url)
    qids = [submit(node, [f"user{i}@dest.test"], message(i)) for i in range(4)]
    for qid in qids:
        wait_status(node, qid, {f"user{qids.index(qid)}@dest.test": "delivered"})
    got = receiver.wait(lambda evs: all(names_for(evs, q) == ["processed", "delivered"] for q in qids))
    assert len([p for p in receiver.posts if p.status == 500]) == 4
    ids = event_ids(got)
    assert len(ids) == len(set(ids)) == 8, "every event exactly once"
    assert ids == sorted(ids), "retries keep the order"
    assert_signed(receiver, secret_of(node))
    # The receiver has them all; the dispatcher marks them sent once each POST's answer is in.
    deadline = time.monotonic() + 10
    while True:
        with node.app.engine.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).select_from(events)
                                   .where(events.c.webhook_due_at.is_not(None))).scalar()
            retried = conn.execute(sa.select(sa.func.max(events.c.webhook_attempts))).scalar()
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pending == 0 and retried >= 1
    assert _posts("5xx") - posts_before["5xx"] == 4
    assert _posts("ok") - posts_before["ok"] == len([p for p in receiver.posts if p.status == 200])


def test_a_dead_webhook_does_not_slow_delivery(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                               remote_mx: Callable[..., RemoteMX]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: connections are refused
    node, mx = start(node_factory, fake_dns, mx_port, remote_mx)
    WebhookService(node.app.engine).set_url("alice", f"http://127.0.0.1:{dead_port}/hook")
    began = time.monotonic()
    qids = [submit(node, [f"user{i}@dest.test"], message(i)) for i in range(5)]
    mx.wait_for(5, timeout=10)
    for i, qid in enumerate(qids):
        wait_status(node, qid, {f"user{i}@dest.test": "delivered"}, timeout=10)
    assert time.monotonic() - began < 8
    time.sleep(1.0)
    with node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.webhook_due_at, events.c.webhook_attempts)
                            .where(events.c.type.in_(["processed", "delivered"]))).all()
    assert len(rows) == 10 and all(r.webhook_due_at is not None for r in rows), "kept for later"
    assert max(r.webhook_attempts for r in rows) >= 1
