"""Per-minute sending rate: a token bucket per account, shared by every process and node.

A plan's `rate_per_minute` R is a bucket of R emails that refills at R a minute: up to R at
once, then one every T = 60/R seconds. It is kept as GCRA keeps it, one number per key:
`full_at`, when the bucket is full again. Taking n emails at `now` is allowed when
max(full_at, now) + n*T <= now + R*T (a minute), and moves `full_at` to that sum. Times are
integer nanoseconds and T is rounded down to one, so a full bucket holds exactly R emails (sums
of float seconds drift: seven times 60/7 s can come out above 60).

Two copies of the same bucket:

- `take_shared`: the `send_rates` row of the account, changed by one conditional upsert that
  runs in the spool writer's group commit (beside the daily/monthly reservation when the plan
  has one, see mailrelay.quota.reserve). PostgreSQL locks the row and evaluates the condition on
  its latest committed version; SQLite has one writer. So all the processes and nodes of a
  database together accept what one bucket would: in any W seconds at most R + R*W/60 emails
  (so at most R in a short burst, and 2R in a calendar minute at worst, as for any bucket of
  R). Each node brings its own clock: one whose clock runs s seconds ahead counts up to s*R/60
  emails early, so keep the clocks in sync (NTP), as the UTC days of the daily limits need too.
- `RateLimiter`: the bucket in a process's memory. Submission takes from it first, as a
  pre-check, and sets it to the shared state after every answer of the database: it never runs
  ahead of the shared one, so when it refuses the database would too, and a client hammering a
  spent account costs no database round trip. When the database cannot be reached it decides
  alone (per process, as before the shared bucket). The inbound policy's per-address rate uses
  it alone, per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from mailrelay.store.schema import send_rates

MINUTE_NS = 60_000_000_000
MAX_BUCKETS = 100_000  # past this, full buckets are forgotten (they hold nothing to remember)


def interval_ns(rate: int) -> int:
    """Nanoseconds per email at `rate` a minute, rounded down (a rate a hair faster, by at
    most rate/6e10 of itself)."""
    return MINUTE_NS // rate


def to_ns(now: float) -> int:
    return int(now * 1_000_000_000)


def admit(full_at: int, now: int, n: int, rate: int) -> tuple[int, float]:
    """GCRA for `n` emails at `now`: (new full_at, 0.0) if they fit, else (full_at unchanged,
    seconds until they would)."""
    interval = interval_ns(rate)
    end = max(full_at, now) + n * interval
    if end <= now + rate * interval:
        return end, 0.0
    return full_at, (end - now - rate * interval) / 1e9


class RateLimiter:
    """Up to `rate` emails a minute per key, in bursts of at most `rate`, in this process."""

    def __init__(self) -> None:
        self._full_at: dict[int, int] = {}  # key -> when its bucket is full again (ns)

    def take(self, key: int, rate: int, now: float, n: int = 1) -> float:
        """Take `n` emails from the bucket: 0.0 if allowed, else seconds until they fit."""
        at = to_ns(now)
        full_at, wait = admit(self._full_at.get(key, at), at, n, rate)
        if wait:
            return wait
        if len(self._full_at) >= MAX_BUCKETS and key not in self._full_at:
            # A bucket whose full_at has passed is full: forgetting it changes nothing.
            self._full_at = {k: v for k, v in self._full_at.items() if v > at}
        self._full_at[key] = full_at
        return 0.0

    def give_back(self, key: int, rate: int, n: int = 1) -> None:
        """Undo a `take` of `n` whose emails were not sent after all."""
        if key in self._full_at:
            self._full_at[key] -= n * interval_ns(rate)

    def learn(self, key: int, full_at: int) -> None:
        """The shared bucket's state as the database answered: keep whichever is further on (a
        take of this process still on its way to the database may be ahead of the answer)."""
        if full_at > self._full_at.get(key, 0):
            self._full_at[key] = full_at


@dataclass(frozen=True, slots=True)
class SharedTake:
    full_at: int  # the shared bucket after this take (or as it stands, when refused)
    wait: float  # 0.0: taken; else seconds until the emails would fit


def _build_take(dialect: str) -> ReturningInsert[Any]:
    insert = postgresql.insert(send_rates) if dialect == "postgresql" else sqlite.insert(send_rates)
    now = sa.bindparam("now", type_=sa.BigInteger)
    cost = sa.bindparam("cost", type_=sa.BigInteger)  # n intervals
    burst = sa.bindparam("burst", type_=sa.BigInteger)  # rate intervals: a full bucket
    end = sa.case((send_rates.c.full_at > now, send_rates.c.full_at), else_=now) + cost
    return (insert.values(account_id=sa.bindparam("account_id", type_=sa.Integer), full_at=now + cost)
            .on_conflict_do_update(index_elements=[send_rates.c.account_id], set_={"full_at": end},
                                   where=end <= now + burst)
            .returning(send_rates.c.full_at))  # a row back only if inserted or updated


# Built once per dialect, as quota.usage's upsert: this runs for every RCPT of a rated plan.
_TAKE = {name: _build_take(name) for name in ("postgresql", "sqlite")}


def take_shared(conn: Connection, account_id: int, n: int, rate: int, now: float) -> SharedTake:
    """Take `n` emails from the account's shared bucket of `rate` a minute, inside the caller's
    transaction; one statement (two when refused: the wait is read back)."""
    at = to_ns(now)
    if n <= rate:  # more than a full bucket never fits: no need to ask
        interval = interval_ns(rate)
        row = conn.execute(_TAKE["postgresql" if conn.dialect.name == "postgresql" else "sqlite"],
                           {"account_id": account_id, "now": at, "cost": n * interval,
                            "burst": rate * interval}).first()
        if row is not None:
            return SharedTake(int(row[0]), 0.0)
    stored = conn.execute(sa.select(send_rates.c.full_at).where(send_rates.c.account_id == account_id)).scalar()
    full_at = int(stored) if stored is not None else at
    return SharedTake(full_at, admit(full_at, at, n, rate)[1])


def give_back_shared(conn: Connection, account_id: int, n: int, rate: int) -> int | None:
    """Undo a `take_shared` of `n` whose emails were not sent; the bucket's new full_at."""
    full_at = conn.execute(send_rates.update().where(send_rates.c.account_id == account_id)
                           .values(full_at=send_rates.c.full_at - n * interval_ns(rate))
                           .returning(send_rates.c.full_at)).scalar()
    return int(full_at) if full_at is not None else None
