"""A sandbox account's mail end to end: checked, DKIM-signed, captured, never sent; one inbox per
account; `inbox release` delivers it for real, once. Real sockets, both databases."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import dkim
import sqlalchemy as sa

from mailrelay.accounts.dnsrecords import dns_records
from mailrelay.sandbox.inbox import Inbox
from mailrelay.store.schema import events, messages, recipients
from tests.integration.cli.conftest import CLI
from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.delivery.test_delivery import MSG, submit, wait_status
from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.integration.smtp.conftest import PASSWORD, Node
from tests.support.dnsserver import FakeDNS

SANDBOX_MSG = (b"From: Sandy <sandy@sender.test>\r\nTo: bob@dest.test\r\nSubject: Reset your password\r\n"
               b"Message-ID: <s1@sender.test>\r\n\r\nClick https://app.test/reset?token=abc123\r\n")


def sandbox_node(node_factory: Callable[..., Node], fake_dns: FakeDNS, mx_port: int) -> Node:
    node = node_factory(delivery_toml(fake_dns.address, mx_port))
    node.app.accounts.create("sandy", PASSWORD, plan="unlimited", sandbox=True)
    node.app.accounts.create("other", PASSWORD, plan="unlimited", sandbox=True)
    node.app.accounts.create("real", PASSWORD, plan="unlimited")
    return node


def test_captured_signed_never_sent_isolated_then_released_once(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, remote_mx: Callable[..., RemoteMX], cli: CLI) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    node = sandbox_node(node_factory, fake_dns, mx_port)
    domain = node.app.domains.add("sender.test", "sandy")
    node.app.domains.mark_verified("sender.test")
    for record in dns_records(domain, hostname="mx.mailrelay.test"):
        if record.type == "TXT":
            fake_dns.txt(record.name, record.value)

    qid = submit(node, ["bob@dest.test", "carol@dest.test"], SANDBOX_MSG, "sandy@sender.test", user="sandy")
    # A real account's message to the same MX, sent after: once it has arrived, the sandbox
    # message would have too, had it been delivered.
    real = submit(node, ["bob@dest.test"], MSG, "alice@sender.test", user="real")
    [got] = mx.wait_for(1)
    wait_status(node, real, {"bob@dest.test": "delivered"})
    wait_status(node, qid, {"bob@dest.test": "captured", "carol@dest.test": "captured"})
    time.sleep(0.5)
    assert [m.mail_from for m in mx.messages] == ["alice@sender.test"], "the sandbox message never left"
    assert mx.handler.connections == 1, "no connection at all for the sandbox message"

    with node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(recipients).where(recipients.c.message_id == qid)).all()
        kinds = [(e.type, e.recipient) for e in conn.execute(
            sa.select(events).where(events.c.message_id == qid).order_by(events.c.id))]
        stored = conn.execute(sa.select(messages).where(messages.c.id == qid)).one()
    assert {(r.attempts, r.next_attempt_at, r.lease_owner) for r in rows} == {(0, None, None)}
    assert sorted(k for k in kinds if k[0] == "captured") == [("captured", "bob@dest.test"),
                                                               ("captured", "carol@dest.test")]
    assert b"DKIM-Signature" not in bytes(stored.body), "the stored message is never rewritten"

    # Signed at capture exactly as delivery would: the signature verifies against the DNS.
    captured = Inbox(node.app.engine).get(qid)
    assert captured.signature.startswith(b"DKIM-Signature: ") and b"d=sender.test" in captured.signature
    assert dkim.verify(captured.raw, dnsfunc=dns_lookup(fake_dns))

    # The inbox: its own account sees it, another account does not, even by id.
    listed = cli("inbox", "list", "--account", "sandy")
    assert listed.code == 0 and qid in listed.out and "Reset your password" in listed.out
    assert "bob@dest.test +1" in listed.out
    assert qid not in cli("inbox", "list", "--account", "other").out
    assert qid not in cli("inbox", "list", "--account", "real").out
    assert [e["id"] for e in json.loads(cli("inbox", "list", "--json").out)] == [qid]
    assert [e["id"] for e in json.loads(cli("inbox", "list", "--search", "TOKEN=ABC", "--json").out)] == [qid]
    assert json.loads(cli("inbox", "list", "--search", "nothing-like-this", "--json").out) == []
    for command in ("show", "raw", "release"):
        refused = cli("inbox", command, qid, "--account", "other")
        assert refused.code == 2, refused
        assert "no captured message" in refused.error_line and "of account other" in refused.error_line

    shown = cli("inbox", "show", qid, "--account", "sandy")
    assert shown.code == 0, shown.err
    assert "signed d=sender.test" in shown.out and "Subject: Reset your password" in shown.out
    assert "Click https://app.test/reset?token=abc123" in shown.out
    assert "html: none" in shown.out and "attachments: none" in shown.out
    raw = cli("inbox", "raw", qid)
    assert raw.code == 0 and raw.out.encode() == captured.raw.replace(b"\r\n", b"\n")  # text mode on our side

    # Release: delivered for real, exactly once, signed afresh.
    released = cli("inbox", "release", qid, "--account", "sandy")
    assert released.code == 0, released.err
    assert released.out == f"{qid}: released to bob@dest.test, carol@dest.test; queued for delivery now\n"
    got = mx.wait_for(2)[1]
    wait_status(node, qid, {"bob@dest.test": "delivered", "carol@dest.test": "delivered"})
    assert sorted(got.rcpt_tos) == ["bob@dest.test", "carol@dest.test"]
    assert got.data.startswith(b"DKIM-Signature: ") and dkim.verify(got.data, dnsfunc=dns_lookup(fake_dns))
    assert cli("inbox", "release", qid).code == 2, "no longer captured"
    time.sleep(1.5)  # a poll interval and more: nothing is sent twice
    assert len(mx.messages) == 2
    assert "no captured messages" in cli("inbox", "list").out
    with node.app.engine.connect() as conn:
        types = [e.type for e in conn.execute(sa.select(events.c.type).where(events.c.message_id == qid))]
    assert types.count("released") == 2 and types.count("delivered") == 2


def test_raw_is_byte_exact(node_factory: Any, fake_dns: FakeDNS, mx_port: int, cli: CLI) -> None:
    import subprocess
    import sys

    from tests.integration.cli.conftest import clean_env

    node = sandbox_node(node_factory, fake_dns, mx_port)
    body = SANDBOX_MSG.replace(b"Click", b"Caf\xc3\xa9 \x01\tclick")
    qid = submit(node, ["bob@dest.test"], body, "sandy@sender.test", user="sandy")
    wait_status(node, qid, {"bob@dest.test": "captured"})
    proc = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(cli.config), "inbox", "raw", qid],
                          capture_output=True, env=clean_env(), cwd=cli.config.parent, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == Inbox(node.app.engine).get(qid).raw
    assert proc.stdout.endswith(body) and b"DKIM-Signature" not in proc.stdout, "sender.test is not sandy's"


def test_clear_only_touches_the_account_given(node_factory: Any, fake_dns: FakeDNS, mx_port: int, cli: CLI,
                                              ) -> None:
    node = sandbox_node(node_factory, fake_dns, mx_port)
    mine = [submit(node, ["bob@dest.test"], SANDBOX_MSG, "sandy@sender.test", user="sandy") for _ in range(2)]
    theirs = submit(node, ["bob@dest.test"], SANDBOX_MSG, "o@other.test", user="other")
    for qid in [*mine, theirs]:
        wait_status(node, qid, {"bob@dest.test": "captured"})

    asked = cli("inbox", "clear", "--account", "sandy")
    assert asked.code == 2
    assert "would delete 2 inbox messages of account sandy; add --yes" in asked.error_line
    assert Inbox(node.app.engine).count() == 3

    done = cli("inbox", "clear", "--account", "sandy", "--yes")
    assert (done.code, done.out) == (0, "deleted 2 inbox messages of account sandy\n")
    assert [e.id for e in Inbox(node.app.engine).list()] == [theirs]
    assert cli("inbox", "clear", "--account", "sandy").out == "deleted 0 inbox messages of account sandy\n"
    with node.app.engine.connect() as conn:
        left = {r.id for r in conn.execute(sa.select(messages.c.id))}
        gone_rcpts = conn.execute(sa.select(sa.func.count()).select_from(recipients)
                                  .where(recipients.c.message_id.in_(mine))).scalar_one()
    assert left == {theirs} and gone_rcpts == 0
    unknown = cli("inbox", "clear", "--account", "nobody", "--yes")
    assert unknown.code == 2 and "no account named 'nobody'" in unknown.error_line
    assert cli("inbox", "clear", "--yes").out == "deleted 1 inbox message of every account\n"
