"""EHLO asks the policy for a lower SIZE; a policy that fails there costs the SIZE line its
advice, never the session (MAIL SIZE= and the end of DATA still check)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from mailrelay.smtp.handler import Session
from mailrelay.smtp.limits import AuthFailureLimiter
from mailrelay.smtp.listener import EngineLimits, Listener
from mailrelay.smtp.server import SMTPServer
from tests.integration.smtp.rawclient import RawClient
from tests.integration.smtp.test_engine_hooks import CountingPolicy


class SizePolicy(CountingPolicy):
    """Knows a 2000-byte limit, or fails to (as a database read during an outage would)."""

    fail = False

    def max_message_size(self, session: Session) -> int | None:
        if self.fail:
            raise ConnectionError("the database went away\n[SQL: SELECT ...]")
        return 2000


@pytest.fixture
def serve() -> Iterator[Callable[[SizePolicy], int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[SMTPServer] = []

    def start(policy: SizePolicy) -> int:
        limiter = AuthFailureLimiter(slowdown_after=3, lockout_after=10, lockout_seconds=60, window=60)
        server = SMTPServer(hostname="mx.test", banner="", limits=EngineLimits(max_message_size=100_000),
                            auth_limiter=limiter,
                            listeners=[Listener(name="t", addresses=(("127.0.0.1", 0),), handler=policy,
                                                tls="none")])
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        servers.append(server)
        return server.bound["t"][0][1]

    yield start
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.stop(1.0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def ehlo_sizes(port: int) -> tuple[RawClient, int, list[str]]:
    c = RawClient(port)
    assert c.reply()[0] == 220
    code, text = c.cmd("EHLO client.test")
    return c, code, [line[4:] for line in text.splitlines() if line[4:].startswith("SIZE")]


def test_ehlo_announces_the_policys_lower_limit(serve: Callable[[SizePolicy], int]) -> None:
    _, code, sizes = ehlo_sizes(serve(SizePolicy()))
    assert (code, sizes) == (250, ["SIZE 2000"])


def test_a_policy_failing_at_ehlo_gets_the_server_size_and_one_log_line(
        serve: Callable[[SizePolicy], int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailrelay")
    policy = SizePolicy()
    policy.fail = True
    c, code, sizes = ehlo_sizes(serve(policy))
    assert (code, sizes) == (250, ["SIZE 100000"])
    assert c.cmd("NOOP")[0] == 250  # the session goes on
    [record] = [r for r in caplog.records if r.name == "mailrelay.smtp"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "the database went away" in record.getMessage() and "SQL" not in record.getMessage()
