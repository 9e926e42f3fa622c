"""Usage counters: one row per account and period ("D2026-11-27", "M2026-11", UTC).

Two ways in: `add_usage` counts whatever was sent (accounts without a daily or monthly
limit, inside the message's own transaction), `reserve` counts one RCPT at a time only while
the limits allow it, and `release` gives back what a transaction reserved but never sent.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailrelay.store.schema import usage

Period = Literal["day", "month"]


def day_period(now: float) -> str:
    return "D" + time.strftime("%Y-%m-%d", time.gmtime(now))


def month_period(now: float) -> str:
    return "M" + time.strftime("%Y-%m", time.gmtime(now))


def day_reset(now: float) -> float:
    """When today's count starts again: the next midnight UTC."""
    t = time.gmtime(now)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86_400)


def month_reset(now: float) -> float:
    """When this month's count starts again: the first of next month, midnight UTC."""
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def _insert(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(usage) if conn.dialect.name == "postgresql" else sqlite.insert(usage)


def _build_add(dialect: str) -> postgresql.Insert | sqlite.Insert:
    insert = postgresql.insert(usage) if dialect == "postgresql" else sqlite.insert(usage)
    return insert.on_conflict_do_update(index_elements=[usage.c.account_id, usage.c.period],
                                        set_={"count": usage.c.count + insert.excluded.count})


# Built once per dialect: this runs in every group commit, and building an upsert (its
# `excluded` alias) costs more than executing it.
_ADD = {name: _build_add(name) for name in ("postgresql", "sqlite")}


def add_usage(conn: Connection, counts: Mapping[int, int], now: float) -> None:
    """Count `counts[account_id]` emails for today and this month, whatever the limits
    (accounts whose recipients were not reserved one by one at RCPT)."""
    day, month = day_period(now), month_period(now)
    rows = [{"account_id": a, "period": p, "count": n}
            for a, n in counts.items() if n > 0 for p in (day, month)]
    if rows:
        conn.execute(_ADD["postgresql" if conn.dialect.name == "postgresql" else "sqlite"], rows)


def ensure_rows(conn: Connection, account_id: int, periods: list[str]) -> None:
    """Make the counter rows exist (count 0), so a conditional UPDATE can find them."""
    insert = _insert(conn)
    conn.execute(insert.on_conflict_do_nothing(index_elements=[usage.c.account_id, usage.c.period]),
                 [{"account_id": account_id, "period": p, "count": 0} for p in periods])


def _count_within(conn: Connection, account_id: int, period: str, n: int, limit: int) -> bool:
    """Add `n` to one counter unless that would pass `limit` (0: no limit); True if added.

    One statement, atomic on both databases: PostgreSQL locks the conflicting row and
    evaluates the WHERE on its latest committed version, so sessions of any number of
    processes queue on the row and none reads a stale count; SQLite has one writer at a time.
    """
    if limit and n > limit:
        return False
    insert = _insert(conn)
    stmt = insert.values(account_id=account_id, period=period, count=n).on_conflict_do_update(
        index_elements=[usage.c.account_id, usage.c.period],
        set_={"count": usage.c.count + n},
        where=(usage.c.count + n <= limit) if limit else None,
    ).returning(usage.c.count)  # a row back only if inserted or updated (rowcount is not portable)
    return conn.execute(stmt).first() is not None


def reserve(conn: Connection, account_id: int, n: int, *, daily_limit: int, monthly_limit: int,
            now: float) -> Period | None:
    """Count `n` emails for today and this month if neither limit (0: none) would be passed.

    Returns None when counted, else the period whose limit refused them ("day" or "month"),
    having counted nothing. Run inside the caller's transaction.
    """
    day, month = day_period(now), month_period(now)
    if not _count_within(conn, account_id, day, n, daily_limit):
        return "day"
    if not _count_within(conn, account_id, month, n, monthly_limit):
        _uncount(conn, account_id, [day], n)
        return "month"
    return None


def release(conn: Connection, account_id: int, n: int, reserved_at: float) -> None:
    """Give back `n` emails reserved at `reserved_at` (their day and month), never below 0."""
    _uncount(conn, account_id, [day_period(reserved_at), month_period(reserved_at)], n)


def _uncount(conn: Connection, account_id: int, periods: list[str], n: int) -> None:
    conn.execute(usage.update()
                 .where(usage.c.account_id == account_id, usage.c.period.in_(periods))
                 .values(count=sa.case((usage.c.count > n, usage.c.count - n), else_=0)))


def counts(conn: Connection, account_id: int, now: float) -> tuple[int, int]:
    """(today, this month) for one account."""
    day, month = day_period(now), month_period(now)
    rows = conn.execute(sa.select(usage.c.period, usage.c.count)
                        .where(usage.c.account_id == account_id, usage.c.period.in_([day, month])))
    found: dict[str, int] = {period: count for period, count in rows}
    return found.get(day, 0), found.get(month, 0)


def counts_today(conn: Connection, now: float) -> dict[int, int]:
    """Today's count of every account that sent something today, by account id (one query)."""
    rows = conn.execute(sa.select(usage.c.account_id, usage.c.count).where(usage.c.period == day_period(now)))
    return {int(account_id): int(count) for account_id, count in rows}
