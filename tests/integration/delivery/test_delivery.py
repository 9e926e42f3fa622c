"""Delivery end to end: submit on 587, look up MX in a loopback DNS server, deliver to aiosmtpd
servers on 127.0.0.X, retry, bounce, suppress — real sockets everywhere."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from mailrelay.spool.writer import SpoolRecord
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, attempts, events, message_bodies, messages, nodes, recipients
from tests.integration.delivery.conftest import Behaviour, RemoteMX, delivery_toml
from tests.integration.quota.test_ehlo_size import Outage, outage  # noqa: F401  (fixture)
from tests.integration.smtp.conftest import PASSWORD, Node
from tests.support.dnsserver import FakeDNS
from tests.support.samplemail import sample_message

MSG = (b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: hello\r\n"
       b"Message-ID: <m1@sender.test>\r\n\r\nHello over SMTP.\r\n.leading dot line\r\n")


def start_node(node_factory: Callable[..., Node], fake_dns: FakeDNS, mx_port: int, extra: str = "") -> Node:
    return node_factory(delivery_toml(fake_dns.address, mx_port, extra))


def submit(node: Node, rcpts: list[str], msg: bytes = MSG, sender: str = "alice@sender.test",
           user: str = "alice") -> str:
    client = node.submission(user, PASSWORD)
    client.ehlo()
    client.mail(sender)
    for rcpt in rcpts:
        client.rcpt(rcpt)
    code, text = client.data(msg)
    assert code == 250, text
    client.quit()
    return text.decode().rsplit(" ", 1)[1]


def statuses(node: Node, queue_id: str) -> dict[str, str]:
    with node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(recipients.c.address, recipients.c.status)
                            .where(recipients.c.message_id == queue_id)).all()
    return {r.address: r.status for r in rows}


def wait_status(node: Node, queue_id: str, want: dict[str, str], timeout: float = 20.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    got: dict[str, str] = {}
    while time.monotonic() < deadline:
        got = statuses(node, queue_id)
        if got == want:
            return got
        time.sleep(0.05)
    raise AssertionError(f"statuses {got}, expected {want}")


def test_a_large_message_stored_compressed_arrives_byte_for_byte(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                                 remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    msg = sample_message(50_000, 3)  # text, HTML and a base64 attachment
    qid = submit(node, ["bob@dest.test"], msg)
    [got] = mx.wait_for(1)
    with node.app.engine.connect() as conn:
        stored = conn.execute(sa.select(message_bodies).where(message_bodies.c.message_id == qid)).one()
    assert len(stored.body) < 0.8 * len(msg), "kept compressed"
    assert got.data == bytes(stored.trace_headers) + msg


def test_delivered_through_mx_with_envelope_intact(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                   remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["bob@dest.test", "carol@dest.test"])
    [got] = mx.wait_for(1)
    assert got.mail_from == "alice@sender.test"
    assert sorted(got.rcpt_tos) == ["bob@dest.test", "carol@dest.test"], "one transaction for one domain"
    assert got.helo == "mx.mailrelay.test"
    # the stored message, with our trace headers, arrives byte for byte (dot-stuffing undone)
    stored = node.stored()[0]
    assert got.data == bytes(stored["trace_headers"]) + bytes(stored["body"])
    assert b"\r\n.leading dot line\r\n" in got.data
    wait_status(node, qid, {"bob@dest.test": "delivered", "carol@dest.test": "delivered"})
    with node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(attempts).where(attempts.c.message_id == qid)).all()
    assert {r.outcome for r in rows} == {"delivered"}
    assert {r.ip for r in rows} == {"127.0.0.2"} and {r.mx_host for r in rows} == {"mx.dest.test"}


def test_mx_preference_and_fallback_to_the_next(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                remote_mx: Callable[..., RemoteMX]) -> None:
    remote_mx("127.0.0.3", down=True)  # best preference, nobody listening
    backup = remote_mx("127.0.0.4")
    worse = remote_mx("127.0.0.5")
    fake_dns.mx("dest.test", (30, "mx3.dest.test"), (10, "mx1.dest.test"), (20, "mx2.dest.test"))
    fake_dns.a("mx1.dest.test", "127.0.0.3")
    fake_dns.a("mx2.dest.test", "127.0.0.4")
    fake_dns.a("mx3.dest.test", "127.0.0.5")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["bob@dest.test"])
    backup.wait_for(1)
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    assert worse.messages == []


def test_451_twice_then_delivered(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                  remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2", Behaviour(defer_first=2))
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["bob@dest.test"])
    mx.wait_for(1, timeout=30)
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    assert mx.handler.data_attempts == 3
    with node.app.engine.connect() as conn:
        outcomes = [r.outcome for r in conn.execute(
            sa.select(attempts.c.outcome).where(attempts.c.message_id == qid).order_by(attempts.c.id))]
        rcpt = conn.execute(sa.select(recipients).where(recipients.c.message_id == qid)).one()
    assert outcomes == ["deferred", "deferred", "delivered"]
    assert rcpt.attempts == 3
    assert len(mx.messages) == 1, "never sent again once accepted"


def test_550_bounces_to_the_sender_as_rfc3464(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                              remote_mx: Callable[..., RemoteMX]) -> None:
    dest = remote_mx("127.0.0.2", Behaviour(reject={"nobody@dest.test"}))
    sender_mx = remote_mx("127.0.0.6")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["nobody@dest.test", "bob@dest.test"])
    dest.wait_for(1)
    [dsn] = sender_mx.wait_for(1)
    assert dsn.mail_from in ("", "<>"), "bounces come from the null sender"
    assert dsn.rcpt_tos == ["alice@sender.test"]
    wait_status(node, qid, {"nobody@dest.test": "bounced", "bob@dest.test": "delivered"})
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                     "text/rfc822-headers"]
    status_text = parts[1].as_string()
    assert "Final-Recipient: rfc822; nobody@dest.test" in status_text
    assert "Action: failed" in status_text and "Status: 5.1.1" in status_text
    assert "Remote-MTA: dns; mx.dest.test" in status_text
    assert "Diagnostic-Code: smtp; 550 5.1.1" in status_text
    assert "bob@dest.test" not in status_text, "only the failed recipient is reported"
    assert "Subject: hello" in parts[2].get_content() if isinstance(parts[2].get_content(), str) \
        else b"Subject: hello" in parts[2].get_content()
    # a hard bounce puts the address on the account's suppression list...
    node.app.engine.dispose()
    with node.app.engine.connect() as conn:
        kinds = {r.type for r in conn.execute(sa.select(events.c.type).where(events.c.message_id == qid))}
    assert {"bounced", "delivered", "bounce-queued"} <= kinds
    # ...so the next message to it is dropped without a connection
    connections = dest.handler.connections
    qid2 = submit(node, ["nobody@dest.test"])
    wait_status(node, qid2, {"nobody@dest.test": "dropped"})
    assert dest.handler.connections == connections


def test_one_bounce_per_message_for_failures_at_two_domains(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                            remote_mx: Callable[..., RemoteMX]) -> None:
    remote_mx("127.0.0.2", Behaviour(reject={"nobody@a.test"}))
    # b.test answers slowly: a.test's failure waits for it, and its own failure joins the report.
    remote_mx("127.0.0.3", Behaviour(reject={"ghost@b.test"}, data_delay=0.5))
    sender_mx = remote_mx("127.0.0.6")
    for domain, ip in (("a.test", "127.0.0.2"), ("b.test", "127.0.0.3"), ("sender.test", "127.0.0.6")):
        fake_dns.mx(domain, (10, f"mx.{domain}"))
        fake_dns.a(f"mx.{domain}", ip)
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["nobody@a.test", "ok@a.test", "ghost@b.test", "fine@b.test"])
    wait_status(node, qid, {"nobody@a.test": "bounced", "ok@a.test": "delivered", "ghost@b.test": "bounced",
                            "fine@b.test": "delivered"})
    [dsn] = sender_mx.wait_for(1)
    time.sleep(0.5)
    assert len(sender_mx.messages) == 1, "one bounce for the message, not one per domain"
    report = dsn.data.decode()
    assert "Final-Recipient: rfc822; nobody@a.test" in report
    assert "Final-Recipient: rfc822; ghost@b.test" in report
    assert "ok@a.test" not in report and "fine@b.test" not in report
    with node.app.engine.connect() as conn:
        pending = conn.execute(sa.select(sa.func.count()).where(recipients.c.dsn_pending.is_not(None))).scalar()
    assert pending == 0


def test_dsn_is_never_sent_for_a_null_sender(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                             remote_mx: Callable[..., RemoteMX]) -> None:
    dest = remote_mx("127.0.0.2", Behaviour(reject={"nobody@dest.test"}))
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["nobody@dest.test"], sender="")
    wait_status(node, qid, {"nobody@dest.test": "bounced"})
    time.sleep(0.5)
    assert len(node.stored()) == 1, "no bounce of a bounce"
    assert dest.messages == []


def test_null_mx_bounces_without_a_connection(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                              remote_mx: Callable[..., RemoteMX]) -> None:
    sender_mx = remote_mx("127.0.0.6")
    fake_dns.null_mx("nomail.test")
    fake_dns.a("nomail.test", "127.0.0.7")
    trap = remote_mx("127.0.0.7")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["x@nomail.test"])
    wait_status(node, qid, {"x@nomail.test": "bounced"})
    [dsn] = sender_mx.wait_for(1)
    assert b"Status: 5.1.10" in dsn.data
    assert trap.handler.connections == 0


def test_mixed_domains_one_failing(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                   remote_mx: Callable[..., RemoteMX]) -> None:
    a = remote_mx("127.0.0.2")
    remote_mx("127.0.0.3", Behaviour(defer_rcpt={"busy@b.test"}))
    fake_dns.mx("a.test", (10, "mx.a.test"))
    fake_dns.a("mx.a.test", "127.0.0.2")
    fake_dns.mx("b.test", (10, "mx.b.test"))
    fake_dns.a("mx.b.test", "127.0.0.3")
    node = start_node(node_factory, fake_dns, mx_port, "[delivery]\nretry_first = 60\nretry_max = 60")
    qid = submit(node, ["one@a.test", "busy@b.test", "nx@nx.test"])
    a.wait_for(1)
    wait_status(node, qid, {"one@a.test": "delivered", "busy@b.test": "deferred", "nx@nx.test": "bounced"})


def test_every_2xx_to_rcpt_gets_the_message(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                           remote_mx: Callable[..., RemoteMX]) -> None:
    """RFC 5321 §4.2.2: 251 and 252 accept a recipient too. The message must reach it, and what
    is recorded is the answer to the message, not the 252."""
    mx = remote_mx("127.0.0.2", Behaviour(unverified={"maybe@a.test"}))
    fake_dns.mx("a.test", (10, "mx.a.test"))
    fake_dns.a("mx.a.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["maybe@a.test"])  # the only recipient: no other one carries the DATA
    got = mx.wait_for(1)
    assert got[0].rcpt_tos == ["maybe@a.test"] and b"Subject:" in got[0].data
    wait_status(node, qid, {"maybe@a.test": "delivered"})
    with node.app.engine.connect() as conn:
        reply = conn.execute(sa.select(events.c.reply).where(events.c.message_id == qid,
                                                              events.c.type == "delivered")).scalar_one()
    assert reply.startswith("250 2.0.0"), reply  # the answer to the message, not the 252


def test_suppressed_address_is_dropped(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                       remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    alice = node.app.accounts.get("alice")
    assert alice is not None
    with node.app.engine.begin() as conn:
        from mailrelay.store.schema import suppressions

        conn.execute(suppressions.insert().values(account_id=alice.id, address="gone@dest.test",
                                                  reason="manual", created_at=time.time()))
    qid = submit(node, ["gone@dest.test", "here@dest.test"])
    [got] = mx.wait_for(1)
    assert got.rcpt_tos == ["here@dest.test"]
    wait_status(node, qid, {"gone@dest.test": "dropped", "here@dest.test": "delivered"})


def test_starttls_is_used_when_offered(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                       remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2", starttls=True)
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["bob@dest.test"])
    [got] = mx.wait_for(1)
    assert got.tls
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    with node.app.engine.connect() as conn:
        tls = conn.execute(sa.select(attempts.c.tls).where(attempts.c.message_id == qid)).scalar()
    assert tls is not None and tls.startswith("TLSv1.")


def test_encrypt_policy_refuses_a_server_without_starttls(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                          remote_mx: Callable[..., RemoteMX]) -> None:
    plain = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port,
                      '[delivery]\nretry_first = 60\nretry_max = 60\n[delivery.tls_policy]\n"dest.test" = "encrypt"')
    qid = submit(node, ["bob@dest.test"])
    wait_status(node, qid, {"bob@dest.test": "deferred"})
    assert plain.messages == []
    with node.app.engine.connect() as conn:
        reply = conn.execute(sa.select(recipients.c.last_reply).where(recipients.c.message_id == qid)).scalar()
    assert reply is not None and "STARTTLS" in reply


def test_delay_warning_is_sent_once_when_configured(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                                    remote_mx: Callable[..., RemoteMX]) -> None:
    dest = remote_mx("127.0.0.2", Behaviour(defer_first=1000))
    sender_mx = remote_mx("127.0.0.6")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = start_node(node_factory, fake_dns, mx_port, "[delivery]\ndelay_warning = 0.5\nretry_max = 0.3")
    qid = submit(node, ["slow@dest.test"])
    [warning] = sender_mx.wait_for(1)
    deadline = time.monotonic() + 10
    while dest.handler.data_attempts < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dest.handler.data_attempts >= 6, "still being retried"
    assert len(sender_mx.messages) == 1, "one warning, not one per retry"
    assert statuses(node, qid) == {"slow@dest.test": "deferred"}
    report = email.message_from_bytes(warning.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert "Action: delayed" in list(report.iter_parts())[1].as_string()


def test_remote_size_limit_is_respected(node_factory: Any, fake_dns: FakeDNS, mx_port: int,
                                        remote_mx: Callable[..., RemoteMX]) -> None:
    small = remote_mx("127.0.0.2", size_limit=1000)
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port)
    qid = submit(node, ["bob@dest.test"], msg=MSG + b"x" * 2000 + b"\r\n")
    wait_status(node, qid, {"bob@dest.test": "bounced"})
    with node.app.engine.connect() as conn:
        reply = conn.execute(sa.select(recipients.c.last_reply).where(recipients.c.message_id == qid)).scalar()
    assert reply is not None and reply.startswith("5.3.4") and "1000" in reply
    assert small.messages == []


def test_leases_of_a_node_on_another_machine_are_taken_over_when_its_heartbeat_stops(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port,
                      "[delivery]\nheartbeat_seconds = 0.2\ndead_after = 1\nretry_first = 0.3")
    now = time.time()
    with node.app.engine.begin() as conn:
        # A node of another machine, its heartbeat stopped: it leased a message for 15 minutes.
        conn.execute(nodes.insert().values(name="far.1.abcdef-d0", host="far", pid=1, local_id="other-boot:1",
                                           started_at=now - 60, heartbeat_at=now - 30))
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "alice")).scalar_one()
        record = SpoolRecord(queue_id="QFAR1", account_id=account_id, mail_from="alice@sender.test", mail_params={},
                             recipients=[("bob@dest.test", {})], client_ip="127.0.0.1", helo="client.test",
                             auth_user="alice", tls_version=None, tls_cipher=None, listener="submission",
                             trace_headers=b"Received: by far with ESMTP id QFAR1\r\n", body=MSG, created_at=now)
        message, body, rcpts = record.rows()
        conn.execute(messages.insert(), [message])
        conn.execute(message_bodies.insert(), [body])
        conn.execute(recipients.insert(), [r | {"lease_owner": "far.1.abcdef-d0", "lease_until": now + 900,
                                                "attempts": 1} for r in rcpts])
    qid = "QFAR1"
    started = time.monotonic()
    mx.wait_for(1, timeout=20)
    took = time.monotonic() - started
    wait_status(node, qid, {"bob@dest.test": "delivered"})
    assert took >= 0.5, "a node is judged on what we saw of it, not on the time it wrote"
    with node.app.engine.connect() as conn:
        assert [r.name for r in conn.execute(sa.select(nodes.c.name))] == [node.app.agent.node]  # type: ignore[union-attr]


def test_a_failure_left_waiting_for_its_bounce_is_reported_by_the_sweep(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX]) -> None:
    # nobody@a.test failed while fine@b.test was being delivered; then fine@b.test left the
    # queue without an outcome of its own (dropped as suppressed): only the sweep can report.
    sender_mx = remote_mx("127.0.0.6")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = start_node(node_factory, fake_dns, mx_port, "[delivery]\nheartbeat_seconds = 0.2\ndead_after = 1")
    now = time.time()
    waiting = json.dumps({"address": "nobody@a.test", "status": "5.1.1", "action": "failed",
                          "diagnostic": "550 5.1.1 no such user", "remote_mta": "mx.a.test", "last_attempt": now})
    with node.app.engine.begin() as conn:
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "alice")).scalar_one()
        record = SpoolRecord(queue_id="QWAIT1", account_id=account_id, mail_from="alice@sender.test", mail_params={},
                             recipients=[("nobody@a.test", {}), ("fine@b.test", {})], client_ip="127.0.0.1",
                             helo="client.test", auth_user="alice", tls_version=None, tls_cipher=None,
                             listener="submission", trace_headers=b"", body=MSG, created_at=now)
        message, body, rcpts = record.rows()
        conn.execute(messages.insert(), [message])
        conn.execute(message_bodies.insert(), [body])
        conn.execute(recipients.insert(), [
            rcpts[0] | {"status": "bounced", "next_attempt_at": None, "dsn_pending": waiting},
            rcpts[1] | {"status": "dropped", "next_attempt_at": None, "dsn_pending": None}])
    [dsn] = sender_mx.wait_for(1)
    assert "Final-Recipient: rfc822; nobody@a.test" in dsn.data.decode()
    assert "fine@b.test" not in dsn.data.decode()
    time.sleep(0.6)
    assert len(sender_mx.messages) == 1
    with node.app.engine.connect() as conn:
        assert conn.execute(sa.select(recipients.c.dsn_pending).where(
            recipients.c.address == "nobody@a.test")).scalar() is None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_claim_that_committed_unseen_as_the_database_went_away_is_handed_back(
        outage: Outage, node_factory: Any, fake_dns: FakeDNS, mx_port: int,  # noqa: F811
        remote_mx: Callable[..., RemoteMX], db_url: str) -> None:
    """A claim's commit can go through with its answer lost (the database crashed in between):
    its recipients are leased to a live agent that does not know them, and only its stop ended
    such a lease (seen: 6 of 300 recipients stuck after a crash). Once a claim failed that way,
    the agent hands back what it leases and no job of its holds."""
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = start_node(node_factory, fake_dns, mx_port, outage.config)
    assert node.app.agent is not None and outage.proxy is not None
    now = time.time()
    direct = create_engine(db_url)
    try:
        with direct.begin() as conn:  # what the unseen claim left: leased to this agent, one attempt counted
            account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "alice")).scalar_one()
            record = SpoolRecord(queue_id="QUNSEEN", account_id=account_id, mail_from="alice@sender.test",
                                 mail_params={}, recipients=[("bob@dest.test", {})], client_ip="127.0.0.1",
                                 helo="client.test", auth_user="alice", tls_version=None, tls_cipher=None,
                                 listener="submission", trace_headers=b"", body=MSG, created_at=now)
            message, body, rcpts = record.rows()
            conn.execute(messages.insert(), [message])
            conn.execute(message_bodies.insert(), [body])
            conn.execute(recipients.insert(), [r | {"lease_owner": node.app.agent.node, "lease_until": now + 900,
                                                    "attempts": 1, "next_attempt_at": now + 60} for r in rcpts])
        outage.begin(node)  # the agent's next claims fail: any of them may have committed unseen
        time.sleep(1.5)
        outage.proxy.restore()
        mx.wait_for(1, timeout=20)
        wait_status(node, "QUNSEEN", {"bob@dest.test": "delivered"})
        with direct.connect() as conn:
            row = conn.execute(sa.select(recipients.c.attempts, recipients.c.lease_owner)
                               .where(recipients.c.message_id == "QUNSEEN")).one()
        assert (row.attempts, row.lease_owner) == (1, None), "the unseen claim's attempt was given back"
    finally:
        direct.dispose()
