"""submission.require_own_domain reads the From: field of every submitted message; a huge or
pathological one must get a prompt, sensible answer, not hold the server's event loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import RawClient

OWN_DOMAIN = "[submission]\nrequire_own_domain = true\n"


def send(c: RawClient, message: bytes) -> tuple[float, tuple[int, str]]:
    """One transaction; (seconds from the end of the message to its reply, the reply)."""
    assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(message + b"\r\n.\r\n")
    start = time.monotonic()
    reply = c.reply()
    return time.monotonic() - start, reply


@pytest.mark.parametrize("value", [
    b"@" * 3_000_000 + b" <alice@sender.test>",  # quadratic in email.utils
    b"," * 3_000_000 + b" alice@sender.test",
    b"<" * 3_000_000 + b"alice@sender.test>",
    b"alice@sender.test, " + b"x@y.test,\r\n " * 250_000,  # folded, multi-megabyte
])
def test_a_multi_megabyte_from_field_is_refused_promptly(node_factory: Callable[..., Node], value: bytes) -> None:
    node = node_factory(OWN_DOMAIN)
    node.app.domains.add("sender.test", "alice")
    node.app.domains.mark_verified("sender.test")
    c = node.raw_login()
    c.sock.settimeout(20)
    spent, (code, text) = send(c, b"From: " + value + b"\r\nSubject: big from\r\n\r\nbody")
    # About 0.3 s on an idle machine and 2.2 s once on a loaded CI one; the quadratic parse
    # this guards against takes minutes.
    assert spent < 6.0, (spent, text)
    assert code == 550 and text.startswith("550 5.7.1") and "From:" in text and "too long" in text, text
    # The session goes on, and an ordinary message from the same client is taken.
    spent, (code, text) = send(c, b"From: Alice <alice@sender.test>\r\nSubject: ok\r\n\r\nbody")
    assert code == 250, text
    assert len(node.stored()) == 1


def test_deeply_nested_comments_are_a_refusal_not_an_internal_error(node_factory: Callable[..., Node]) -> None:
    node = node_factory(OWN_DOMAIN)
    node.app.domains.add("sender.test", "alice")
    node.app.domains.mark_verified("sender.test")
    c = node.raw_login()
    _, (code, text) = send(c, b"From: " + b"(" * 2000 + b"alice@sender.test\r\n\r\nbody")
    assert code == 550 and text.startswith("550 5.7.1"), text
    assert node.stored() == []
