"""Deadlines for a whole command line and a whole DATA phase, against clients that trickle.

The idle timeout restarts at every byte, so a client sending one byte every few seconds would
hold its connection forever without these. Each test sets short deadlines in its own config:
seconds, not fractions, and far from every pause the client makes, so that a loaded machine
(a late select, a late sweep: it runs every quarter of the shortest deadline) does not decide.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable

from tests.integration.quota.conftest import TRUSTED, rcpts, usage_of, wait_usage
from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import RawClient

NodeFactory = Callable[..., Node]


def trusted_client(node: Node) -> RawClient:
    c = node.raw("smtp")
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert c.cmd("EHLO client.test")[0] == 250
    return c


def trickle(c: RawClient, data: bytes, every: float) -> tuple[float, tuple[int, str] | None]:
    """Send `data` one byte per `every` seconds, stopping early if the server says anything.
    Returns (seconds spent, the reply if one came before the last byte)."""
    start = time.monotonic()
    for i in range(len(data)):
        try:
            c.send(data[i:i + 1])
        except OSError:
            break  # closed under us: the reply is already buffered
        readable, _, _ = select.select([c.sock], [], [], every)
        if readable:
            return time.monotonic() - start, c.reply()
    return time.monotonic() - start, None


def test_a_command_trickled_past_its_deadline_gets_421(node_factory: NodeFactory) -> None:
    # The idle timeout (30 s in the base config) never fires: a byte comes every 0.1 s.
    node = node_factory(TRUSTED + "[smtp]\ncommand_deadline = 2\n")
    c = trusted_client(node)
    spent, reply = trickle(c, b"NOOP " + b"x" * 100 + b"\r\n", 0.1)
    assert reply is not None, "the trickled command was read to its end"
    code, text = reply
    assert code == 421 and text.startswith("421 4.4.2") and "timeout" in text.lower(), text
    assert 1.9 <= spent < 6, spent  # the line took 10.6 s
    assert c.closed()


def test_slow_commands_within_the_deadline_are_answered(node_factory: NodeFactory) -> None:
    # Each line takes 1.2 s of a 3 s deadline; the four take longer than one deadline and a
    # sweep: the clock is per line, not per session.
    node = node_factory(TRUSTED + "[smtp]\ncommand_deadline = 3\n")
    c = trusted_client(node)
    for line in (b"NOOP slowly\r\n", b"RSET slowly\r\n", b"NOOP slowly\r\n", b"NOOP slowly\r\n"):
        spent, reply = trickle(c, line, 0.1)
        assert reply is not None and reply[0] == 250, (reply, spent)
    assert c.cmd("QUIT")[0] == 221


def test_a_trickled_message_past_the_data_deadline_gets_421_and_gives_quota_back(
        node_factory: NodeFactory) -> None:
    # min_data_rate far above the trickle: the bytes sent buy (almost) no extra time.
    node = node_factory(TRUSTED + "[smtp]\ndata_deadline = 2\nmin_data_rate = 100000\n"
                        "[plans.free]\ndaily_limit = 5\n")
    c = trusted_client(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com"])] == [250, 250]
    assert usage_of(node, "bob", time.time()) == (2, 2)  # reserved at RCPT
    assert c.cmd("DATA")[0] == 354
    # Every line is short and complete: the command deadline does not apply inside DATA.
    spent, reply = trickle(c, b"Subject: slow\r\n\r\n" + b"line\r\n" * 50, 0.05)
    assert reply is not None, "the trickled message was read to its end"
    code, text = reply
    assert code == 421 and text.startswith("421 4.4.2"), text
    assert 1.9 <= spent < 6, spent  # the message took 15.8 s
    assert c.closed()
    assert node.stored() == []
    assert wait_usage(node, "bob", (0, 0), time.time()) == (0, 0), "the reservation was not given back"


def test_a_slow_message_sent_above_the_minimum_rate_is_accepted(node_factory: NodeFactory) -> None:
    # 1.5 s of grace, then one more second per 1000 bytes received: a client sending 10,000
    # bytes a second for 3 s (twice the base deadline) finishes in time, however late the
    # machine lets it send (each 0.1 s sent buys a second).
    node = node_factory(TRUSTED + "[smtp]\ndata_deadline = 1.5\nmin_data_rate = 1000\n")
    c = trusted_client(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]
    assert c.cmd("DATA")[0] == 354
    start = time.monotonic()
    c.send(b"Subject: slow but steady\r\n\r\n")
    while time.monotonic() - start < 3.0:
        c.send((b"y" * 98 + b"\r\n") * 10)
        readable, _, _ = select.select([c.sock], [], [], 0.1)
        assert not readable, c.reply()
    code, text = c.cmd(b".")
    assert code == 250, text
    assert len(node.stored()) == 1


def test_the_command_deadline_does_not_count_time_between_commands(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\ncommand_deadline = 2\n")
    c = trusted_client(node)
    c.send(b"NO")
    time.sleep(0.2)
    c.send(b"OP\r\n")
    assert c.reply()[0] == 250
    time.sleep(3.0)  # idle, not inside a command (past the deadline and a sweep): only idle_timeout applies
    assert c.cmd("NOOP")[0] == 250


def test_a_client_sending_fast_past_the_size_limit_is_not_given_time_for_ever(node_factory: NodeFactory) -> None:
    # 5000 bytes a second, well above min_data_rate: each byte used to buy more time, so a
    # message that never ends held its connection for ever. A message of at most 1024 bytes
    # needs at most ~1 s of allowance (dot-stuffing room included): 1 + 1 s, then 421.
    node = node_factory(TRUSTED + "[smtp]\nmax_message_size = 1024\ndata_deadline = 1\n"
                        "min_data_rate = 2000\n")
    c = trusted_client(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]
    assert c.cmd("DATA")[0] == 354
    start = time.monotonic()
    reply = None
    while reply is None and time.monotonic() - start < 8:
        with contextlib.suppress(OSError):  # closed under us: the reply is already buffered
            c.send((b"z" * 98 + b"\r\n") * 5)
        readable, _, _ = select.select([c.sock], [], [], 0.1)
        if readable:
            reply = c.reply()
    spent = time.monotonic() - start
    assert reply is not None, f"still sending after {spent:.1f} s"
    code, text = reply
    assert code == 421 and text.startswith("421 4.4.2"), text
    assert 1.9 <= spent < 6, spent
    assert node.stored() == []
