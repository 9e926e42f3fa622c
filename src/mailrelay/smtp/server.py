"""Listening sockets, connection limits, idle sweeping and graceful shutdown for SMTP sessions.

Security: connections are limited in total and per client address (trusted networks exempt,
as Postfix exempts mynetworks); an address locked out for failed logins is refused at connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailrelay.core import reply as R
from mailrelay.core.reply import Reply
from mailrelay.smtp.base import SessionBase
from mailrelay.smtp.limits import AuthFailureLimiter, ConnectionCounter
from mailrelay.smtp.listener import EngineLimits, Listener
from mailrelay.smtp.session import SMTPSession

log = logging.getLogger("mailrelay.smtp")


@dataclass(frozen=True, slots=True)
class BindFailure:
    listener: str
    address: str
    port: int
    error: OSError

    def advice(self) -> str:
        if self.error.errno == errno.EACCES:
            return (f"listener {self.listener}: cannot bind {self.address}:{self.port} (permission denied); "
                    f"run as root, grant the capability with `setcap cap_net_bind_service=+ep` on the "
                    f"Python binary, or change listener.{self.listener}.listen in the config")
        if self.error.errno == errno.EADDRINUSE:
            return (f"listener {self.listener}: {self.address}:{self.port} is already in use by another "
                    f"program; stop it or change listener.{self.listener}.listen in the config")
        return (f"listener {self.listener}: cannot bind {self.address}:{self.port}: {self.error.strerror}; "
                f"change listener.{self.listener}.listen in the config")


@dataclass(frozen=True, slots=True)
class ListenerState:
    """What a node's SMTP listeners bound at start: told to its HTTP processes for /readyz."""

    bound: tuple[str, ...] = ()  # "name host:port" of each bound address
    unbound: tuple[str, ...] = ()  # "name host:port" of each address that could not be bound

    @property
    def ready(self) -> bool:
        return bool(self.bound) and not self.unbound


class SMTPServer:
    """All listeners of one process and the sessions they carry (their `Host`, see smtp.base)."""

    def __init__(self, *, hostname: str, banner: str, limits: EngineLimits,
                 auth_limiter: AuthFailureLimiter, listeners: Sequence[Listener]) -> None:
        self.hostname = hostname
        self.banner = banner
        self.limits = limits
        self.auth_limiter = auth_limiter
        self.listeners = tuple(listeners)
        self.counter = ConnectionCounter()
        self.sessions: set[SessionBase] = set()
        self.draining = False
        self._servers: list[asyncio.Server] = []
        self.bound: dict[str, list[tuple[str, int]]] = {}
        self.failures: list[BindFailure] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> list[BindFailure]:
        """Bind every listener address; return those that failed (the rest still serve)."""
        loop = asyncio.get_running_loop()
        failures: list[BindFailure] = []
        for listener in self.listeners:
            for host, port in listener.addresses:
                ssl_ctx = listener.ssl_context if listener.tls == "implicit" else None
                try:
                    server = await loop.create_server(
                        lambda lst=listener: SMTPSession(self, lst),
                        host=host, port=port, ssl=ssl_ctx, backlog=4096, reuse_address=True,
                        ssl_handshake_timeout=30.0 if ssl_ctx else None,
                        family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                    )
                except OSError as exc:
                    failures.append(BindFailure(listener.name, host, port, exc))
                    continue
                self._servers.append(server)
                for sock in server.sockets:
                    addr = sock.getsockname()
                    self.bound.setdefault(listener.name, []).append((str(addr[0]), int(addr[1])))
        self._sweeper = loop.create_task(self._sweep())
        self.failures = failures
        return failures

    def state(self) -> ListenerState:
        return ListenerState(
            bound=tuple(f"{name} {host}:{port}" for name, addrs in self.bound.items() for host, port in addrs),
            unbound=tuple(f"{f.listener} {f.address}:{f.port}" for f in self.failures))

    def admit(self, session: SessionBase) -> Reply | None:
        """Count a new connection; a Reply means refuse it (the caller closes)."""
        s = session.session
        self.sessions.add(session)
        per_ip = self.counter.add(session.client_key)
        if self.draining:
            return R.SHUTTING_DOWN
        if self.counter.total > self.limits.max_connections:
            return R.TOO_MANY_CONNECTIONS
        if per_ip > self.limits.max_connections_per_ip and not s.trusted:
            return R.TOO_MANY_FROM_YOU
        if self.auth_limiter.locked(session.client_key):
            return R.AUTH_LOCKED_OUT
        return None

    def release(self, session: SessionBase) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.counter.remove(session.client_key)

    async def _sweep(self) -> None:
        """Close sessions past a time limit (idle, command, DATA); one timer for all
        connections instead of one each. A limit is enforced within a quarter of the shortest
        one (at most 5 s) after it passes."""
        lim = self.limits
        interval = max(0.05, min(lim.idle_timeout / 4, lim.command_deadline / 4, lim.data_deadline / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions):
                reply = session.overdue(now)
                if reply is not None:
                    if reply is not R.IDLE_TIMEOUT:
                        log.info("%s from %s", reply.text.partition(",")[0], session.session.peer_ip,
                                 extra={"client_ip": session.session.peer_ip})
                    session.close(reply)
            self.auth_limiter.prune()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let transactions in flight finish (bounded), then close the rest."""
        self.draining = True
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            if not session.in_transaction:
                session.close(R.SHUTTING_DOWN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(s.in_transaction for s in self.sessions):
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close(R.SHUTTING_DOWN)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
