"""The shared count of failed logins per client address (table auth_failures).

Used by mailrelay.accounts.lockout from the writer thread of each process. A window starts at
a client's first failure and lasts `window` seconds; the failure that reaches `lockout_after`
locks the client for `lockout_seconds`. Times are epoch seconds of the writing node.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailrelay.store.schema import auth_failures as T


def add_failure(conn: Connection, client: str, *, now: float, window: float, lockout_after: int,
                lockout_seconds: float) -> tuple[int, float | None]:
    """Count one failure of `client`: (failures in its window, locked until or None)."""
    insert = postgresql.insert(T) if conn.dialect.name == "postgresql" else sqlite.insert(T)
    conn.execute(insert.values(client=client, failures=0, window_start=now, locked_until=None)
                 .on_conflict_do_nothing(index_elements=[T.c.client]))
    row = conn.execute(sa.select(T.c.failures, T.c.window_start, T.c.locked_until)
                       .where(T.c.client == client).with_for_update()).one()
    failures, start = (row.failures + 1, row.window_start) if row.window_start > now - window else (1, now)
    locked = row.locked_until if row.locked_until is not None and row.locked_until > now else None
    if failures >= lockout_after:
        locked = now + lockout_seconds
    conn.execute(T.update().where(T.c.client == client)
                 .values(failures=failures, window_start=start, locked_until=locked))
    return failures, locked


def locked_clients(conn: Connection, now: float) -> list[tuple[str, float]]:
    """(client, locked until) of every client locked at `now`."""
    rows = conn.execute(sa.select(T.c.client, T.c.locked_until).where(T.c.locked_until > now))
    return [(r.client, r.locked_until) for r in rows]


def prune(conn: Connection, now: float, window: float) -> int:
    """Forget clients whose window and lock-out are over; how many."""
    gone = conn.execute(T.delete().where(T.c.window_start <= now - window)
                        .where(sa.or_(T.c.locked_until.is_(None), T.c.locked_until <= now)))
    return gone.rowcount or 0
