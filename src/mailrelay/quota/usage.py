"""Usage counters: one row per account and period ("D2026-11-27", "M2026-11", UTC)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailrelay.store.schema import usage


def day_period(now: float) -> str:
    return "D" + time.strftime("%Y-%m-%d", time.gmtime(now))


def month_period(now: float) -> str:
    return "M" + time.strftime("%Y-%m", time.gmtime(now))


def add_usage(conn: Connection, counts: Mapping[int, int], now: float) -> None:
    """Count `counts[account_id]` emails for today and this month, whatever the limits
    (accounts whose recipients were not reserved one by one at RCPT)."""
    rows = [{"account_id": a, "period": p, "count": n}
            for a, n in counts.items() if n > 0 for p in (day_period(now), month_period(now))]
    if not rows:
        return
    insert = postgresql.insert(usage) if conn.dialect.name == "postgresql" else sqlite.insert(usage)
    stmt = insert.on_conflict_do_update(index_elements=[usage.c.account_id, usage.c.period],
                                        set_={"count": usage.c.count + insert.excluded.count})
    conn.execute(stmt, rows)


def ensure_rows(conn: Connection, account_id: int, periods: list[str]) -> None:
    """Make the counter rows exist (count 0), so a conditional UPDATE can find them."""
    insert = postgresql.insert(usage) if conn.dialect.name == "postgresql" else sqlite.insert(usage)
    conn.execute(insert.on_conflict_do_nothing(index_elements=[usage.c.account_id, usage.c.period]),
                 [{"account_id": account_id, "period": p, "count": 0} for p in periods])



