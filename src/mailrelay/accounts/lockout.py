"""Failed logins counted per client address by every process and node together.

Each process keeps smtp.limits.AuthFailureLimiter's own count (slow-down and lock-out without
waiting for the database) and also adds every failure to table auth_failures through the
spool writer, which answers with the count of all processes: the failure that reaches
`lockout_after` there locks the client here at once. Locks made by other processes (the SMTP
process, the other API processes, other nodes) are read once a second, so a client locked
anywhere is refused everywhere within about a second; an attacker spreading attempts over N
processes gains at most what N processes allow in that second. A failed SMTP login and a
failed API key from one address count together. When the database is unavailable the local
count still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from mailrelay.smtp.limits import AuthFailureLimiter
from mailrelay.store import authfailures

log = logging.getLogger("mailrelay.auth")
Run = Callable[[Callable[[Connection], Any]], "asyncio.Future[Any]"]

SYNC_EVERY = 1.0  # seconds between reads of the locks other processes made
PRUNE_EVERY = 60.0  # seconds between deletions of finished windows


class SharedLockout(AuthFailureLimiter):
    def __init__(self, *, run: Run, slowdown_after: int, lockout_after: int, lockout_seconds: float,
                 window: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, sync_every: float = SYNC_EVERY) -> None:
        super().__init__(slowdown_after=slowdown_after, lockout_after=lockout_after,
                         lockout_seconds=lockout_seconds, window=window, clock=clock)
        self._run = run
        self._wall = wall
        self._sync_every = sync_every
        self._task: asyncio.Task[None] | None = None

    def record_failure(self, ip: str) -> float:
        delay = super().record_failure(ip)
        op = partial(authfailures.add_failure, client=ip, now=self._wall(), window=self.window,
                     lockout_after=self.lockout_after, lockout_seconds=self.lockout_seconds)
        self._run(op).add_done_callback(partial(self._counted, ip))
        return delay

    def _counted(self, ip: str, fut: asyncio.Future[tuple[int, float | None]]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the database is away: this process's own count still holds
        _, locked_until = fut.result()
        if locked_until is not None:
            self._lock(ip, locked_until)

    def _lock(self, ip: str, until_wall: float) -> None:
        until = self._clock() + (until_wall - self._wall())
        if until > self._locked_until.get(ip, 0.0):
            self._locked_until[ip] = until

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sync(), name="auth-lockout-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sync(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(self._sync_every)
            now = self._wall()
            try:
                for ip, until in await self._run(partial(authfailures.locked_clients, now=now)):
                    self._lock(ip, until)
                if now - last_prune >= PRUNE_EVERY:
                    await self._run(partial(authfailures.prune, now=now, window=self.window))
                    last_prune = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: its own health log says so
                log.debug("reading shared lock-outs failed: %s", exc)
