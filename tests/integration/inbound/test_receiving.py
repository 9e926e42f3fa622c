"""Receiving mail for our own domains on port 25: recipient checks, SPF, DKIM, DMARC, iprev.

Real sockets throughout: a mailrelay node on 127.0.0.1, a FakeDNS server on loopback publishing
SPF, DKIM, DMARC and PTR records, and clients connecting from chosen 127.0.0.X source addresses
(127.0.0.10 is authorised by sender.test's SPF record, 127.0.0.11 is not). Both databases.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from mailrelay.accounts.addresses import AddressService
from mailrelay.mailauth.dkimsign import DKIMKey, DKIMSigner, generate_private_key, public_key_record
from mailrelay.store.schema import events, usage
from tests.integration.smtp.conftest import Node, ca, node_factory  # noqa: F401 - fixtures
from tests.support.dnsserver import FakeDNS

HOST = "mx.mailrelay.test"  # the node's hostname (authserv-id)
GOOD_IP, BAD_IP = "127.0.0.10", "127.0.0.11"


def message(sender: str = "carol@sender.test", to: str = "ann@in.test", *, body: str = "Hello there.\r\n",
            extra: str = "") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: Greetings\r\n"
            f"Message-ID: <m1@sender.test>\r\nDate: Thu, 27 Nov 2025 10:00:00 +0000\r\n{extra}\r\n"
            f"{body}").encode()


@pytest.fixture(scope="module")
def dkim_pem() -> bytes:
    return generate_private_key("rsa", 1024)


def publish(dns: FakeDNS, dkim_pem: bytes) -> None:
    dns.txt("sender.test", "v=spf1 ip4:127.0.0.10 -all")
    dns.txt("s1._domainkey.sender.test", public_key_record(dkim_pem))
    dns.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    dns.txt("esp.test", "v=spf1 ip4:127.0.0.10 ip4:127.0.0.11 -all")  # a bulk sender's bounce domain
    dns.txt("quar.test", "v=spf1 -all")
    dns.txt("_dmarc.quar.test", "v=DMARC1; p=quarantine")
    dns.txt("pct0.test", "v=spf1 -all")
    dns.txt("_dmarc.pct0.test", "v=DMARC1; p=reject; pct=0")
    dns.ptr("10.0.0.127.in-addr.arpa", "mail.sender.test")
    dns.a("mail.sender.test", GOOD_IP)
    dns.ptr("11.0.0.127.in-addr.arpa", "liar.sender.test")  # does not lead back: iprev fail
    dns.a("liar.sender.test", "192.0.2.1")


def sign(data: bytes, pem: bytes) -> bytes:
    return DKIMSigner([DKIMKey("sender.test", "s1", "rsa-sha256", pem)]).sign(data) + data


@pytest.fixture
def inbound(node_factory: Callable[..., Node], fake_dns: FakeDNS, dkim_pem: bytes) -> Node:  # noqa: F811
    publish(fake_dns, dkim_pem)
    node = node_factory(f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 1')
    node.app.domains.add("in.test", "alice", inbound=True)
    AddressService(node.app.engine).add("ann@in.test")
    return node


def session(node: Node, source: str = GOOD_IP, helo: str = "mail.sender.test") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.port("smtp"), local_hostname=helo, timeout=30,
                          source_address=(source, 0))
    client.ehlo()
    return client


def send(node: Node, data: bytes, *, rcpts: tuple[str, ...] = ("ann@in.test",), source: str = GOOD_IP,
         mail_from: str = "carol@sender.test", helo: str = "mail.sender.test") -> tuple[int, str]:
    """One transaction; every RCPT must be accepted. The reply to DATA."""
    with session(node, source, helo) as client:
        code, text = client.mail(mail_from)
        assert code == 250, text
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, reply = client.data(data)
        return code, reply.decode()


def rcpt_reply(node: Node, rcpt: str, *, source: str = GOOD_IP) -> tuple[int, str]:
    with session(node, source) as client:
        client.mail("carol@sender.test")
        code, text = client.rcpt(rcpt)
        return code, text.decode()


def stored_one(node: Node) -> dict[str, Any]:
    [row] = [m for m in node.stored() if m["direction"] == "in"]
    row["auth"] = json.loads(row["auth"])
    row["data"] = bytes(row["trace_headers"]) + bytes(row["body"])
    return row


def by_reply(node: Node, reply: str) -> dict[str, Any]:
    """The stored message whose queue id ends the 250 reply."""
    return next(m for m in node.stored() if m["id"] == reply.rsplit(" ", 1)[1])


def authres(row: dict[str, Any]) -> str:
    return str(row["auth"]["authentication_results"])


def test_spf_pass_and_fail_by_source_address(inbound: Node) -> None:
    code, reply = send(inbound, message())
    assert code == 250 and reply.startswith("2.0.0 Ok: queued as "), reply
    row = stored_one(inbound)
    assert reply.endswith(row["id"])
    ar = authres(row)
    assert ar.startswith(f"{HOST}; iprev=pass")
    assert "spf=pass smtp.mailfrom=sender.test" in ar and "dkim=none" in ar
    assert "dmarc=pass" in ar and "header.from=sender.test" in ar
    assert row["auth"]["spf"]["result"] == "pass" and row["auth"]["sender_ip"] == GOOD_IP
    assert row["auth"]["iprev"] == {"result": "pass", "ip": GOOD_IP, "name": "mail.sender.test"}
    assert row["auth"]["helo"] == "mail.sender.test"
    assert row["direction"] == "in" and row["account_id"] is not None
    assert [(r["address"], r["status"]) for r in row["recipients"]] == [("ann@in.test", "kept")]
    data = row["data"]
    assert data.startswith(b"Received: from mail.sender.test (mail.sender.test [127.0.0.10])\r\n"
                           b"\tby mx.mailrelay.test (mailrelay) with ESMTP id " + row["id"].encode())
    assert b"\r\nAuthentication-Results: mx.mailrelay.test;" in data
    assert bytes(row["body"]) == message()  # stored as received
    with inbound.app.engine.connect() as conn:
        types = conn.execute(sa.select(events.c.recipient, events.c.type)
                             .where(events.c.message_id == row["id"])).all()
        assert [tuple(t) for t in types] == [("ann@in.test", "inbound-received")]
        assert conn.execute(sa.select(sa.func.count()).select_from(usage)).scalar_one() == 0  # no quota

    # From 127.0.0.11, which sender.test's SPF record does not authorise: accepted (monitor),
    # SPF fail, and DMARC fail as nothing else is aligned.
    code, reply = send(inbound, message(), source=BAD_IP)
    assert code == 250, reply
    row = by_reply(inbound, reply)
    auth = json.loads(row["auth"])
    assert auth["spf"]["result"] == "fail" and "spf=fail smtp.mailfrom=sender.test" in auth["authentication_results"]
    assert auth["dmarc"]["result"] == "fail" and auth["dmarc"]["action"] == "none"
    assert auth["iprev"]["result"] == "fail"
    assert bytes(row["trace_headers"]).startswith(b"Received: from mail.sender.test (unknown [127.0.0.11])")


def test_dkim_pass_and_modified_body_fail(inbound: Node, dkim_pem: bytes) -> None:
    signed = sign(message(), dkim_pem)
    # From the unauthorised address: SPF fails, so DMARC passes on the aligned DKIM pass alone.
    code, reply = send(inbound, signed, source=BAD_IP)
    assert code == 250, reply
    row = stored_one(inbound)
    ar = authres(row)
    assert "dkim=pass header.d=sender.test" in ar and "header.s=s1" in ar
    assert "spf=fail" in ar and "dmarc=pass" in ar
    assert row["auth"]["dkim"][0] | {"comment": ""} == {"result": "pass", "domain": "sender.test",
                                                        "selector": "s1", "algorithm": "rsa-sha256",
                                                        "comment": ""}
    assert bytes(row["body"]) == signed

    tampered = signed.replace(b"Hello there.", b"Hello there!")
    code, reply = send(inbound, tampered, source=BAD_IP)
    assert code == 250, reply
    row = by_reply(inbound, reply)
    auth = json.loads(row["auth"])
    assert [d["result"] for d in auth["dkim"]] == ["fail"]
    assert "dkim=fail" in auth["authentication_results"] and auth["dmarc"]["result"] == "fail"


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_dmarc_reject_with_failing_alignment(inbound: Node, mode: str) -> None:
    inbound.app.domains.add("strict.test", "alice", inbound=True, catch_all=True, dmarc_policy=mode)
    # SPF passes for the bounce domain esp.test, but From: is sender.test (p=reject): not aligned.
    with session(inbound) as client:
        client.mail("bounce@esp.test")
        assert client.rcpt("x@strict.test")[0] == 250
        code, text = client.data(message(to="x@strict.test"))
    if mode == "enforce":
        assert (code, text.decode()) == (550, "5.7.1 Rejected by DMARC policy for sender.test")
        assert inbound.stored() == []
        return
    assert code == 250, text
    row = stored_one(inbound)
    ar = authres(row)
    assert "spf=pass smtp.mailfrom=esp.test" in ar and "dmarc=fail" in ar and "p=reject" in ar
    assert row["auth"]["dmarc"] | {"comment": ""} == {
        "result": "fail", "policy": "reject", "domain": "sender.test", "from_domain": "sender.test",
        "comment": "", "action": "none"}
    assert b"X-Mailrelay-Quarantine" not in row["data"]


def test_dmarc_pass_under_enforce_and_quarantine_marked(inbound: Node) -> None:
    inbound.app.domains.set_inbound("in.test", dmarc_policy="enforce")
    code, reply = send(inbound, message())  # aligned SPF pass: accepted
    assert code == 250, reply
    code, reply = send(inbound, message(sender="dan@quar.test"), mail_from="dan@quar.test")
    assert code == 250, reply
    row = by_reply(inbound, reply)
    auth = json.loads(row["auth"])
    assert auth["dmarc"]["result"] == "fail" and auth["dmarc"]["action"] == "quarantine"
    trace = bytes(row["trace_headers"])
    assert trace.endswith(b"X-Mailrelay-Quarantine: dmarc\r\n") and b"dmarc=fail" in trace


def test_dmarc_pct_0_applies_the_next_lower_policy(inbound: Node) -> None:
    # RFC 7489 §6.6.4: p=reject with pct=0 selects no message, so each gets quarantine instead.
    inbound.app.domains.set_inbound("in.test", dmarc_policy="enforce")
    code, reply = send(inbound, message(sender="eve@pct0.test"), mail_from="eve@pct0.test")
    assert code == 250, reply
    row = by_reply(inbound, reply)
    auth = json.loads(row["auth"])
    assert (auth["dmarc"]["result"], auth["dmarc"]["policy"], auth["dmarc"]["action"]) == (
        "fail", "reject", "quarantine")
    assert bytes(row["trace_headers"]).endswith(b"X-Mailrelay-Quarantine: dmarc\r\n")


def test_recipient_checks(inbound: Node) -> None:
    inbound.app.domains.add("all.test", "alice", inbound=True, catch_all=True)
    inbound.app.domains.add("sendonly.test", "alice")  # a sender domain only
    assert rcpt_reply(inbound, "nobody@in.test") == (
        550, "5.1.1 <nobody@in.test>: Recipient address rejected: User unknown in virtual mailbox table")
    assert rcpt_reply(inbound, "ANN@In.Test")[0] == 250  # local parts and domains case-insensitive
    assert rcpt_reply(inbound, "anything.at.all@all.test")[0] == 250
    for rcpt in ("someone@elsewhere.test", "x@sendonly.test", "ann%in.test@elsewhere.test",
                 "ann@[127.0.0.1]"):
        code, text = rcpt_reply(inbound, rcpt)
        assert (code, text) == (554, f"5.7.1 <{rcpt}>: Relay access denied"), rcpt


def test_sub_address_reaches_the_address(inbound: Node) -> None:
    # ann@in.test is known: ann+anything@in.test is hers (recipient_delimiter "+", the default).
    assert rcpt_reply(inbound, "ann+news@in.test")[0] == 250
    assert rcpt_reply(inbound, "zed+news@in.test")[0] == 550
    code, reply = send(inbound, message(to="ann+news@in.test"), rcpts=("ann+news@in.test",))
    assert code == 250, reply
    assert [r["address"] for r in by_reply(inbound, reply)["recipients"]] == ["ann+news@in.test"]


@pytest.mark.parametrize(("delimiter", "address", "code"),
                         [("", "ann+news@in.test", 550), ("-", "ann-news@in.test", 250),
                          ("-", "ann+news@in.test", 550)])
def test_recipient_delimiter_is_a_setting(node_factory: Callable[..., Node], fake_dns: FakeDNS,  # noqa: F811
                                          dkim_pem: bytes,
                                          delimiter: str, address: str, code: int) -> None:
    publish(fake_dns, dkim_pem)
    node = node_factory(f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 1\n'
                        f'[inbound]\nrecipient_delimiter = "{delimiter}"')
    node.app.domains.add("in.test", "alice", inbound=True)
    AddressService(node.app.engine).add("ann@in.test")
    assert rcpt_reply(node, address)[0] == code


def test_one_account_per_transaction(inbound: Node) -> None:
    inbound.app.domains.add("bob.test", "bob", inbound=True, catch_all=True)
    inbound.app.domains.add("al2.test", "alice", inbound=True, catch_all=True)
    with session(inbound) as client:
        client.mail("carol@sender.test")
        assert client.rcpt("ann@in.test")[0] == 250
        assert client.rcpt("x@al2.test")[0] == 250  # same account, another domain
        code, text = client.rcpt("x@bob.test")
        assert (code, text.decode()) == (452, "4.5.3 <x@bob.test>: Too many recipients: send mail for "
                                              "this recipient in another transaction")
        assert client.data(message())[0] == 250
    [row] = inbound.stored()
    assert sorted(r["address"] for r in row["recipients"]) == ["ann@in.test", "x@al2.test"]


def test_forged_authentication_results_removed(inbound: Node) -> None:
    forged = (f"Authentication-Results: {HOST.upper()}; spf=pass smtp.mailfrom=sender.test;\r\n"
              "\tdkim=pass header.d=bank.test\r\n"
              "Authentication-Results: other.test; spf=neutral smtp.mailfrom=sender.test\r\n"
              "x-mailrelay-quarantine : none\r\n\tforged\r\n")
    code, reply = send(inbound, message(extra=forged), source=BAD_IP)
    assert code == 250, reply
    row = stored_one(inbound)
    body = bytes(row["body"])
    assert b"bank.test" not in body and HOST.upper().encode() not in body
    assert b"Authentication-Results: other.test; spf=neutral" in body
    assert row["data"].count(f"Authentication-Results: {HOST}".encode()) == 1
    assert b"quarantine" not in body.lower() and b"forged" not in body


def test_dns_timeout_is_temperror_and_mail_is_accepted(inbound: Node, fake_dns: FakeDNS) -> None:
    fake_dns.timeout("slow.test")
    fake_dns.timeout("_dmarc.slow.test")
    start = time.monotonic()
    code, reply = send(inbound, message(sender="eve@slow.test"), mail_from="eve@slow.test")
    assert code == 250, reply
    assert time.monotonic() - start < 15
    row = stored_one(inbound)
    assert row["auth"]["spf"]["result"] == "temperror"
    assert row["auth"]["dmarc"]["result"] == "temperror"
    assert "spf=temperror" in authres(row) and "dmarc=temperror" in authres(row)


def test_disabled_account_domain_refuses(inbound: Node) -> None:
    inbound.app.domains.add("bob.test", "bob", inbound=True, catch_all=True)
    inbound.app.accounts.set_status("bob", "disabled")
    assert rcpt_reply(inbound, "x@bob.test") == (
        550, "5.7.1 <x@bob.test>: Recipient address rejected: this domain does not accept mail")


def test_webhook_domain_starts_inbound(inbound: Node) -> None:
    inbound.app.domains.add("hook.test", "alice", inbound=True, catch_all=True,
                            webhook="https://hooks.example.test/parse")
    code, reply = send(inbound, message(to="z@hook.test"), rcpts=("z@hook.test",))
    assert code == 250, reply
    row = stored_one(inbound)
    assert [r["status"] for r in row["recipients"]] == ["inbound"]


def test_authenticated_sessions_are_unaffected(inbound: Node) -> None:
    with inbound.submission() as client:
        client.sendmail("alice@in.test", ["ann@in.test", "nobody@in.test", "x@elsewhere.test"], message())
    [row] = inbound.stored()
    assert row["direction"] == "out" and row["auth"] is None
    assert sorted(r["status"] for r in row["recipients"]) == ["queued"] * 3


def test_rate_per_client_address(inbound: Node) -> None:
    receiver = inbound.app.smtp.listeners[0].handler.inbound  # type: ignore[attr-defined]
    receiver.rate_per_minute = 2
    assert rcpt_reply(inbound, "ann@in.test")[0] == 250
    assert rcpt_reply(inbound, "ann@in.test")[0] == 250
    code, text = rcpt_reply(inbound, "ann@in.test")
    assert code == 451 and text.startswith("4.7.1 Rate limit exceeded: too many messages from your "
                                           "address; try again in "), text
    assert rcpt_reply(inbound, "ann@in.test", source="127.0.0.12")[0] == 250  # per address


def test_hostile_from_fields_are_a_dmarc_permerror_not_a_failed_session(inbound: Node) -> None:
    # Nested comments made the stdlib address parser recurse until RecursionError (451 for the
    # message, every retry); a huge From kept the event loop busy for seconds.
    nested = message().replace(b"From: Carol <carol@sender.test>", b"From: " + b"(" * 3000 + b"carol@sender.test")
    huge = message().replace(b"From: Carol <carol@sender.test>",
                             b"From: " + b"\r\n ".join([b"a@sender.test,"] * 40_000) + b" carol@sender.test")
    for data, problem in ((nested, "unreadable From field"), (huge, "From field too long")):
        code, reply = send(inbound, data)
        assert code == 250, reply
        dmarc = json.loads(by_reply(inbound, reply)["auth"])["dmarc"]
        assert (dmarc["result"], dmarc["comment"]) == ("permerror", problem)
