"""Received mail with lines over 998 octets (a 10,000-octet line, a 1 MB body on one line) is
accepted on port 25, DKIM-verified, and posted to the parse webhook intact: the parse webhook
is HTTP, so nothing needs re-encoding on the way. Real sockets, both databases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.inbound.test_parse_webhook import form_of
from tests.integration.inbound.test_receiving import dkim_pem, publish, send, sign  # noqa: F401 - fixture
from tests.integration.smtp.conftest import Node, ca, node_factory  # noqa: F401 - fixtures
from tests.support.dnsserver import FakeDNS
from tests.support.httpsink import Post, Receiver, http_receiver

TEXT = "Hello,\r\n" + "a line of prose " * 625 + "\r\nBye.\r\n"  # 10,000 octets on its own line
HTML = "<html><body>" + "<p>minified</p>" * 69_905 + "</body></html>"  # 1 MB without a line end


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/parse") as rcv:
        yield rcv


@pytest.fixture
def node(node_factory: Callable[..., Node], fake_dns: FakeDNS, dkim_pem: bytes,  # noqa: F811
         receiver: Receiver) -> Node:
    publish(fake_dns, dkim_pem)
    node = node_factory(f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 1\n'
                        "[delivery]\nenabled = true\nprocesses = 0")
    node.app.domains.add("in.test", "alice", inbound=True, catch_all=True, webhook=receiver.url)
    node.app.domains.add("raw.test", "alice", inbound=True, catch_all=True, webhook=receiver.url, raw=True)
    return node


def wait_post(receiver: Receiver, count: int, timeout: float = 20.0) -> list[Post]:
    deadline = time.monotonic() + timeout
    while len(receiver.accepted()) < count:
        assert time.monotonic() < deadline, f"{len(receiver.accepted())} POSTs, expected {count}"
        time.sleep(0.05)
    return receiver.accepted()


def test_long_lines_are_received_and_posted_intact(node: Node, dkim_pem: bytes,  # noqa: F811
                                                   receiver: Receiver) -> None:
    assert len(HTML) > 1 << 20 and "\n" not in HTML
    message = sign(("From: Carol <carol@sender.test>\r\nTo: ann@in.test\r\nSubject: long lines\r\n"
                    "Message-ID: <long@sender.test>\r\nMIME-Version: 1.0\r\n"
                    'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
                    "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT + "\r\n"
                    "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML + "\r\n--b1--\r\n").encode(),
                   dkim_pem)
    code, reply = send(node, message)
    assert code == 250, reply
    [post] = wait_post(receiver, 1)
    form = form_of(post)
    assert form["text"][0].decode() == TEXT
    assert form["html"][0].decode() == HTML
    assert form["dkim"][0] == b"{@sender.test : pass}", "the signature over the long lines verifies"


def test_long_line_is_posted_byte_for_byte_in_raw_mode(node: Node, receiver: Receiver) -> None:
    body = ("From: carol@sender.test\r\nTo: z@raw.test\r\nSubject: one line\r\n"
            "Message-ID: <raw@sender.test>\r\n\r\n" + "x" * 10_000 + "\r\n").encode()
    code, reply = send(node, body, rcpts=("z@raw.test",))
    assert code == 250, reply
    [post] = wait_post(receiver, 1)
    assert form_of(post)["email"][0].endswith(b"\r\n" + body)
