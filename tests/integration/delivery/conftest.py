"""Remote mail servers for delivery tests: aiosmtpd recipients on 127.0.0.X, one shared port.

`delivery.mx_port` is one port for every MX, so each fake MX host is its own loopback address
(127.0.0.2, 127.0.0.3, ...) listening on that port, and the fake DNS points names at them.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from tests.integration.smtp.conftest import Node, ca, node_factory  # noqa: F401 - fixtures
from tests.support.ports import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    helo: str
    at: float = 0.0  # time.monotonic() when DATA began


def _opened(event: threading.Event) -> threading.Event:
    event.set()
    return event


@dataclass
class Behaviour:
    defer_first: int = 0  # answer DATA with 451 this many times first
    reject: set[str] = field(default_factory=set)  # RCPT answered 550 5.1.1
    defer_rcpt: set[str] = field(default_factory=set)  # RCPT answered 450 4.2.1
    unverified: set[str] = field(default_factory=set)  # RCPT answered 252: taken, not verified
    data_delay: float = 0.0  # seconds between the end of DATA and the 250: a slow server
    tempfail: bool = False  # while set, every DATA is answered 451 (an MX in trouble for a while)
    # Cleared, every DATA waits for it before its reply: a test holds the remote side still
    # while it looks at the sender (no race with a machine that is slow today).
    open: threading.Event = field(default_factory=lambda: _opened(threading.Event()))


class RecordingHandler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.messages: list[Received] = []
        self.data_attempts = 0
        self.deferred = 0  # DATAs answered 451
        self.in_data = 0  # transactions between DATA and our reply right now
        self.connections = 0
        self.lock = threading.Lock()

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        # aiosmtpd handles pipelined commands but does not say so; most real MXs do, and
        # delivery then pipelines (RFC 2920), so the tests take that path.
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.behaviour.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in self.behaviour.defer_rcpt:
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        if address in self.behaviour.unverified:
            return "252 2.1.5 Cannot verify the user, but will accept the message"
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        began = time.monotonic()
        with self.lock:
            self.data_attempts += 1
            if self.data_attempts <= self.behaviour.defer_first or self.behaviour.tempfail:
                self.deferred += 1
                return "451 4.3.0 Temporary local problem, try again"
        if self.behaviour.data_delay or not self.behaviour.open.is_set():
            with self.lock:
                self.in_data += 1
            await asyncio.sleep(self.behaviour.data_delay)
            while not self.behaviour.open.is_set():
                await asyncio.sleep(0.02)
            with self.lock:
                self.in_data -= 1
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or b"",
                                          session.ssl is not None, session.host_name or "", began))
        return "250 2.0.0 OK queued"


@dataclass
class RemoteMX:
    ip: str
    port: int
    handler: RecordingHandler
    controller: Controller | None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.handler.messages) >= count:
                return self.handler.messages
            time.sleep(0.05)
        raise AssertionError(f"{self.ip} got {len(self.handler.messages)} messages, expected {count}")

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port_on(ips: list[str]) -> int:
    """A port free on every one of `ips` (all on loopback)."""
    return free_port(ips[0], *ips[1:])


@pytest.fixture
def mx_port() -> int:
    return free_port_on([f"127.0.0.{i}" for i in range(2, 12)])


@pytest.fixture
def remote_mx(mx_port: int, ca: trustme.CA) -> Iterator[Callable[..., RemoteMX]]:  # noqa: F811
    started: list[RemoteMX] = []

    def start(ip: str, behaviour: Behaviour | None = None, *, starttls: bool = False, down: bool = False,
              size_limit: int | None = None) -> RemoteMX:
        handler = RecordingHandler(behaviour or Behaviour())
        if down:
            mx = RemoteMX(ip, mx_port, handler, None)
            started.append(mx)
            return mx
        kwargs: dict[str, Any] = {}
        if starttls:
            cert = ca.issue_cert(f"mx-{ip}.test", ip)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(ctx)
            kwargs = {"tls_context": ctx, "require_starttls": False}
        if size_limit is not None:
            kwargs["data_size_limit"] = size_limit
        controller = Controller(handler, hostname=ip, port=mx_port, ready_timeout=10,
                                server_hostname=f"mx-{ip}.test", **kwargs)
        controller.start()
        mx = RemoteMX(ip, mx_port, handler, controller)
        started.append(mx)
        return mx

    yield start
    for mx in started:
        mx.stop()


def delivery_toml(dns_address: str, mx_port: int, extra: str = "") -> str:
    return f"""
[dns]
nameservers = ["{dns_address}"]
timeout = 2
[delivery]
enabled = true
processes = 0
mx_port = {mx_port}
allow_private_destinations = true
retry_first = 0.3
retry_max = 0.6
connect_timeout = 3
command_timeout = 10
[submission]
require_own_domain = false
{extra}
"""


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    """The event loop a test_wire*.py test runs on (`wirepeers.run`): both, as production may use either."""
    name: str = request.param
    return name
