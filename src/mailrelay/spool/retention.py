"""The background retention sweep of a node: store.retention's batches through the writer.

It runs in the `serve` process only (App with SMTP), so one per node whatever
`delivery.processes` is (0: delivery in that process too; none when delivery is off), and
never in the delivery workers or HTTP children. Candidates are found with a read on a
connection of its own (SQLite in WAL: readers wait for nobody); each batch's deletes are one
op of the spool writer, sharing its single writer thread and commit with accepted mail, so
accepting waits at most one batch; a pause between batches lets queued mail go first. SQLite's
free pages are then given back a few MiB at a time on the sweeper's own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from mailrelay.settings import RetentionSettings
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store import retention as R
from mailrelay.store.health import is_unavailable

log = logging.getLogger("mailrelay.spool")


def plan_for(settings: RetentionSettings, now: float) -> R.Plan:
    return R.Plan.at(now, {"bodies": settings.bodies_days, "messages": settings.messages_days,
                           "sandbox": settings.sandbox_days, "inbound": settings.inbound_days})


class RetentionSweeper:
    def __init__(self, settings: RetentionSettings, engine: sa.Engine, writer: SpoolWriter,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.engine = engine
        self.writer = writer
        self.clock = clock
        self.sweeps = 0
        self.removed: dict[str, R.Removed] = {kind: R.Removed(kind) for kind in R.KINDS}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:  # the first sweep one interval after start: a starting node has other work
            await asyncio.sleep(self.settings.interval)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, a deadlock: the next sweep tries again
                if is_unavailable(exc):  # one line per outage, the writer's, not one per sweep
                    self.writer.health.failed(exc)
                    continue
                log.warning("retention sweep failed: %s; next in %gs", str(exc).splitlines()[0] if str(exc) else
                            type(exc).__name__, self.settings.interval)

    async def sweep_once(self) -> dict[str, R.Removed]:
        s = self.settings
        plan = plan_for(s, self.clock())
        loop = asyncio.get_running_loop()
        totals = {kind: R.Removed(kind) for kind in plan.cutoff}
        for kind, cutoff in plan.cutoff.items():
            cursor, spare = R.Cursor(), plan.spare(kind)
            while not cursor.done:
                ids = await loop.run_in_executor(None, self._find, kind, cutoff, s.batch, cursor, spare)
                if not ids:
                    break
                done = await self.writer.run(functools.partial(R.apply, kind=kind, cutoff=cutoff, ids=ids,
                                                               spare=spare))
                totals[kind].add(done)
                await asyncio.sleep(s.pause)
        if any(t.messages for t in totals.values()):
            while await loop.run_in_executor(None, R.incremental_vacuum, self.engine):
                await asyncio.sleep(s.pause)
            log.info("retention: %s", ", ".join(f"{t.messages} {kind}" for kind, t in totals.items() if t.messages))
        for kind, t in totals.items():
            self.removed[kind].add(t)
        self.sweeps += 1
        return totals

    def _find(self, kind: str, cutoff: float, limit: int, cursor: R.Cursor, spare: float | None) -> list[str]:
        with self.engine.connect() as conn:
            return R.find(conn, kind, cutoff, limit, cursor, spare)
