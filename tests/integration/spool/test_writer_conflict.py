"""A group commit that PostgreSQL aborts as a deadlock victim is written again, whole, and
its callers get their answers as if nothing happened (no 451 for mail that lost a lock race
with another node). A real deadlock between the writer's transaction and another connection."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.spool.writer import SpoolWriter
from mailrelay.store.schema import accounts


def _account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(name=name, password_hash="x", created_at=0,
                                                         updated_at=0).returning(accounts.c.id)).scalar_one())


def _lock(conn: Connection, account_id: int) -> None:
    conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has one writer: no deadlock
def test_a_deadlock_victim_batch_is_written_again(engine: sa.Engine) -> None:
    a, b = _account(engine, "a"), _account(engine, "b")
    b_locked, a_locked = threading.Event(), threading.Event()
    other_pid: list[int] = []
    runs: list[int] = []

    def other() -> None:  # locks b, then waits for a: the other half of the cycle
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL deadlock_timeout = '20s'")  # the writer is found first
            other_pid.append(int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
            _lock(conn, b)
            b_locked.set()
            assert a_locked.wait(30)
            _lock(conn, a)

    def op(conn: Connection) -> str:
        runs.append(1)
        if len(runs) == 1:
            conn.exec_driver_sql("SET LOCAL deadlock_timeout = '50ms'")
            _lock(conn, a)
            assert b_locked.wait(30)
            a_locked.set()
            with engine.connect() as watch:  # until the other waits for a: then b closes the cycle
                deadline = time.monotonic() + 30
                while watch.execute(sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"),
                                    {"p": other_pid[0]}).scalar() != "Lock":
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            _lock(conn, b)  # deadlock: this transaction is aborted after 50 ms
        else:
            _lock(conn, a)
            _lock(conn, b)
        return "written"

    thread = threading.Thread(target=other)
    thread.start()

    async def run() -> tuple[str, int]:
        writer = SpoolWriter(engine)
        writer.start(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(writer.run(op), 60), writer.conflicts
        finally:
            writer.stop()

    result, conflicts = asyncio.run(run())
    thread.join(30)
    assert (result, conflicts, len(runs)) == ("written", 1, 2)
