"""The engine's contract with a policy: awaitable RCPT checks and `abandon`, over real sockets.

A policy that reserves something per recipient (quota) must learn of every transaction that
ends without an accepted message, however it ends, and exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field

import pytest

from mailrelay.core.address import Path
from mailrelay.core.reply import OK, Refusal, Reply
from mailrelay.smtp.handler import Identity, Session, Transaction
from mailrelay.smtp.limits import AuthFailureLimiter
from mailrelay.smtp.listener import EngineLimits, Listener
from mailrelay.smtp.server import SMTPServer
from tests.integration.smtp.rawclient import RawClient

FULL = Reply(451, "4.7.1", "no credit left")


@dataclass
class CountingPolicy:
    """Reserves one unit per recipient after a short await; refuses addresses starting "no"."""

    reserved: int = 0
    abandoned: list[list[str]] = field(default_factory=list)
    accepted: list[list[str]] = field(default_factory=list)
    delay: float = 0.02

    async def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        return None

    def max_message_size(self, session: Session) -> int | None:
        return None

    def check_sender(self, session: Session, txn: Transaction) -> None:
        pass

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        if rcpt.address.startswith("sync"):
            return None  # a check without I/O answers at once
        return self._reserve(txn, rcpt)

    async def _reserve(self, txn: Transaction, rcpt: Path) -> None:
        await asyncio.sleep(self.delay)
        if rcpt.address.startswith("no"):
            raise Refusal(FULL)
        self.reserved += 1
        txn.hold = (txn.hold or 0) + 1

    def abandon(self, session: Session, txn: Transaction) -> None:
        self.abandoned.append([r.address for r in txn.recipients])
        self.reserved -= txn.hold or 0
        txn.hold = 0

    def accept(self, session: Session, txn: Transaction, body: bytes) -> Awaitable[Reply]:
        if b"crash-me" in body:
            raise RuntimeError("a bug in the policy")  # before any awaitable exists
        return self._accept(txn, body)

    async def _accept(self, txn: Transaction, body: bytes) -> Reply:
        if b"refuse-me" in body:
            raise Refusal(Reply(554, "5.7.1", "content refused"))
        self.accepted.append([r.address for r in txn.recipients])
        return OK.with_text("Ok: queued")


@dataclass
class Engine:
    policy: CountingPolicy
    server: SMTPServer
    loop: asyncio.AbstractEventLoop

    def client(self) -> RawClient:
        c = RawClient(self.server.bound["t"][0][1])
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        return c

    def settled(self, predicate: object, timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds (the server runs in another thread)."""
        deadline = self.loop.time() + timeout
        while not predicate():  # type: ignore[operator]
            assert self.loop.time() < deadline, "condition not reached in time"
            threading.Event().wait(0.01)


@pytest.fixture
def engine() -> Iterator[Engine]:
    policy = CountingPolicy()
    loop = asyncio.new_event_loop()
    limiter = AuthFailureLimiter(slowdown_after=3, lockout_after=10, lockout_seconds=60, window=60)
    server = SMTPServer(hostname="mx.test", banner="", limits=EngineLimits(), auth_limiter=limiter,
                        listeners=[Listener(name="t", addresses=(("127.0.0.1", 0),), handler=policy,
                                            tls="none", trusted_networks=())])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield Engine(policy, server, loop)
    asyncio.run_coroutine_threadsafe(server.stop(1.0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_pipelined_recipients_are_answered_in_order(engine: Engine) -> None:
    c = engine.client()
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<no@y.test>\r\n"
           b"RCPT TO:<sync@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(6)] == [250, 250, 451, 250, 250, 354]
    assert c.cmd(b"Subject: hi\r\n\r\nbody\r\n.")[0] == 250
    # The refused recipient is not part of the message; nothing was abandoned.
    assert engine.policy.accepted == [["b@y.test", "sync@y.test", "c@y.test"]]
    assert engine.policy.abandoned == []
    assert engine.policy.reserved == 2


@pytest.mark.parametrize("ending", ["RSET", "EHLO again", "refused DATA", "crashed DATA", "oversized DATA", "QUIT",
                                    "drop"])
def test_every_unaccepted_transaction_is_abandoned_once(engine: Engine, ending: str) -> None:
    c = engine.client()
    assert c.cmd("MAIL FROM:<a@x.test>")[0] == 250
    assert c.cmd("RCPT TO:<b@y.test>")[0] == 250
    assert c.cmd("RCPT TO:<c@y.test>")[0] == 250
    assert engine.policy.reserved == 2
    if ending == "RSET":
        assert c.cmd("RSET")[0] == 250
    elif ending == "EHLO again":
        assert c.cmd("EHLO client.test")[0] == 250
    elif ending == "refused DATA":
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(b"Subject: refuse-me\r\n\r\nx\r\n.")[0] == 554
    elif ending == "crashed DATA":
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(b"Subject: crash-me\r\n\r\nx\r\n.")[0] == 451
        assert c.cmd("NOOP")[0] == 250  # the session goes on
    elif ending == "oversized DATA":
        assert c.cmd("DATA")[0] == 354
        c.send(b"x" * 40_000_000 + b"\r\n.\r\n")
        assert c.reply()[0] == 552
    elif ending == "QUIT":
        assert c.cmd("QUIT")[0] == 221
    else:
        c.sock.close()
    engine.settled(lambda: engine.policy.abandoned)
    assert engine.policy.abandoned == [["b@y.test", "c@y.test"]]
    assert engine.policy.reserved == 0
    assert engine.policy.accepted == []


def test_client_gone_during_an_awaited_check_is_abandoned(engine: Engine) -> None:
    engine.policy.delay = 0.3
    c = engine.client()
    assert c.cmd("MAIL FROM:<a@x.test>")[0] == 250
    c.send(b"RCPT TO:<b@y.test>\r\n")
    c.sock.close()  # before the check answers: its reservation must still be given back
    engine.settled(lambda: engine.policy.abandoned)
    assert engine.policy.abandoned == [["b@y.test"]]
    assert engine.policy.reserved == 0


def test_accepted_message_is_not_abandoned(engine: Engine) -> None:
    c = engine.client()
    for line in ("MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>"):
        assert c.cmd(line)[0] == 250
    assert c.cmd("DATA")[0] == 354
    assert c.cmd(b"Subject: ok\r\n\r\nx\r\n.")[0] == 250
    assert c.cmd("QUIT")[0] == 221
    assert engine.policy.accepted == [["b@y.test"]]
    assert engine.policy.abandoned == []
    assert engine.policy.reserved == 1
