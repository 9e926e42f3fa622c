"""LISTEN/NOTIFY on PostgreSQL: a commit with new mail wakes listeners once, only those of its
schema; a listener whose connection is cut listens again by itself."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from mailrelay.spool import wakeups
from mailrelay.spool.wakeups import QueueListener, notify

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


async def _settle(wakes: list[float], count: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(wakes) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(2 * wakeups.DEBOUNCE)  # and nothing more comes


def test_notifies_wake_once_per_burst_and_the_listener_comes_back_after_its_connection_is_cut(
        engine: sa.Engine, pg_admin: sa.Engine) -> None:
    async def run() -> None:
        wakes: list[float] = []
        listener = QueueListener(engine, lambda: wakes.append(time.monotonic()))
        listener.start()
        await asyncio.wait_for(listener.listening.wait(), 10)
        await _settle(wakes, 1)
        assert len(wakes) == 1  # once on listening: mail may have come while it was not

        burst = time.monotonic()
        for _ in range(10):  # ten commits in a burst (one per spool writer batch)
            with engine.begin() as conn:
                notify(conn)
        burst = time.monotonic() - burst
        with pg_admin.begin() as conn:  # another schema's queue: not ours
            notify(conn)
        await _settle(wakes, 2)
        # At once, then at most once per debounce window while the burst lasts.
        assert 2 <= len(wakes) - 1 <= 2 + burst / wakeups.DEBOUNCE and len(wakes) - 1 < 10

        cut = listener.backend_pid
        with pg_admin.begin() as conn:
            assert conn.execute(sa.select(sa.func.pg_terminate_backend(cut))).scalar_one()
        before = len(wakes)
        deadline = time.monotonic() + 10
        while not (listener.backend_pid != cut and len(wakes) > before) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # cut, then listening again (and a wake for what it missed)
        assert listener.listening.is_set() and listener.backend_pid != cut and len(wakes) > before
        with engine.begin() as conn:
            notify(conn)
        await _settle(wakes, before + 2)
        assert len(wakes) == before + 2
        await listener.stop()

    asyncio.run(run())
