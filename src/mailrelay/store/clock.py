"""The queue's clock: on PostgreSQL the database server's, on SQLite this machine's.

Nodes on several machines compare times written by one another: a recipient's next attempt
(written when it was queued or claimed) against "now" when claiming, a lease's end against
"now" when it is taken over. With each node on its own clock, a node 30 s ahead retries every
deferral 30 s early and takes over an ownerless lease 30 s early, and mail queued by it waits
30 s before a node whose clock is right sees it due. So every node keeps the offset between its
clock and the database server's, learned with one `clock_timestamp()` inside a transaction it
commits anyway, at most every `SYNC_SECONDS`, and writes and compares times on the database's
clock. SQLite is one machine: its clock is the local one.

Which node is alive is never decided by comparing clocks (spool.nodes watches heartbeats change
on the observer's own monotonic clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Connection

SYNC_SECONDS = 30.0  # clocks drift by milliseconds a day; a step (NTP, an operator) is seen this soon


class DatabaseClock:
    """`now()`: this machine's time corrected by the offset last measured to the database."""

    def __init__(self, dialect: str, *, local: Callable[[], float] = time.time,
                 every: float = SYNC_SECONDS) -> None:
        """`local`: this machine's wall clock (tests give one that is off)."""
        self._local = local
        self._shared = dialect == "postgresql"
        self._every = every
        self._synced_at: float | None = None  # monotonic
        self.offset = 0.0  # database minus local, in seconds

    def now(self) -> float:
        return self._local() + self.offset

    def due(self) -> bool:
        """Time to measure the offset again (never on SQLite)."""
        return self._shared and (self._synced_at is None or time.monotonic() - self._synced_at >= self._every)

    def sync(self, conn: Connection) -> None:
        """Measure the offset with one query on `conn` (halfway through its round trip)."""
        before = self._local()
        db = database_now(conn)
        after = self._local()
        self.offset = db - (before + after) / 2
        self._synced_at = time.monotonic()


def database_now(conn: Connection) -> float:
    """The queue's clock read once: the PostgreSQL server's time, or this machine's on SQLite."""
    if conn.dialect.name != "postgresql":
        return time.time()
    return float(conn.exec_driver_sql("SELECT extract(epoch FROM clock_timestamp())").scalar_one())


def local_offset(conn: Connection) -> float:
    """This machine's clock minus the queue's, in whole seconds: add it to a time read from the
    queue to compare it with `time.time()` in what an operator is shown (node ages); whole, so
    that two readings agree (0 on SQLite, and where the clocks agree)."""
    return float(round(time.time() - database_now(conn))) if conn.dialect.name == "postgresql" else 0.0
