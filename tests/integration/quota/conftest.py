"""Plans and quotas over real sockets: the in-process node of tests/integration/smtp, with the
submission policy's clock in the test's hands (a new day is a new clock value, not a sleep)."""

from __future__ import annotations

import calendar
import socket
import struct
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from mailrelay.quota.usage import counts
from mailrelay.router import PolicyRouter
from mailrelay.store.schema import accounts, recipients
from mailrelay.submission.policy import SubmissionPolicy
from tests.integration.cli.conftest import cli, inproc  # noqa: F401  (fixtures)
from tests.integration.smtp.conftest import Node, ca, node_factory  # noqa: F401  (fixtures)
from tests.integration.smtp.rawclient import RawClient

# Mid-afternoon, so that a few seconds more stay in the same UTC day.
NOON = float(calendar.timegm((2026, 11, 27, 15, 0, 0)))
DAY = 86_400.0

# alice logs in on submission; bob is the account of the trusted network (no login).
TRUSTED = '[submission]\ntrusted_networks = ["127.0.0.0/8"]\ntrusted_account = "bob"\n'


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(node: Node) -> SubmissionPolicy:
    router = node.app.smtp.listeners[0].handler
    assert isinstance(router, PolicyRouter)
    return router.submission


@pytest.fixture
def quota_node(node_factory: Callable[..., Node]) -> Callable[..., tuple[Node, Clock]]:  # noqa: F811
    """A node with `extra` config and a fixed clock (NOON); returns (node, clock)."""

    def start(extra: str = "") -> tuple[Node, Clock]:
        node = node_factory(TRUSTED + extra)
        clock = Clock()
        policy(node).clock = clock
        return node, clock

    return start


def set_plan(node: Node, account: str, plan: str) -> None:
    """Before the account logs in (the plan is read at login)."""
    with node.app.engine.begin() as conn:
        conn.execute(accounts.update().where(accounts.c.name == account).values(plan=plan))


def usage_of(node: Node, account: str, now: float = NOON) -> tuple[int, int]:
    with node.app.engine.connect() as conn:
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).scalar_one()
        return counts(conn, account_id, now)


def stored_recipients(node: Node) -> int:
    with node.app.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(recipients)).scalar_one())


def wait_usage(node: Node, account: str, want: tuple[int, int], now: float = NOON) -> tuple[int, int]:
    """Give-backs are fire-and-forget: wait (briefly) for the count to settle on `want`."""
    deadline = time.monotonic() + 5
    got = usage_of(node, account, now)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = usage_of(node, account, now)
    return got


def settle(node: Node) -> None:
    """Wait until the spool writer has committed nothing new for 0.2 s (at most 5 s)."""
    deadline = time.monotonic() + 5
    last, since = node.app.writer.batches, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 0.2:
        time.sleep(0.02)
        if node.app.writer.batches != last:
            last, since = node.app.writer.batches, time.monotonic()


def reset(c: RawClient) -> None:
    """Close with RST instead of FIN: the connection is lost, not ended."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def trusted(node: Node) -> RawClient:
    """A client on the smtp listener from a trusted address (account bob), after EHLO."""
    c = node.raw("smtp")
    assert c.cmd("EHLO client.test")[0] == 250
    return c


def rcpts(c: RawClient, addresses: list[str], sender: str = "app@example.net") -> list[tuple[int, str]]:
    """MAIL and RCPTs pipelined in one write (RFC 2920); the replies to the RCPTs."""
    lines = [f"MAIL FROM:<{sender}>"] + [f"RCPT TO:<{a}>" for a in addresses]
    c.send(("\r\n".join(lines) + "\r\n").encode())
    code, text = c.reply()
    assert code == 250, text
    return [c.reply() for _ in addresses]


def data(c: RawClient, body: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> tuple[int, str]:
    code, text = c.cmd("DATA")
    if code != 354:
        return code, text
    return c.cmd(body + b".")
