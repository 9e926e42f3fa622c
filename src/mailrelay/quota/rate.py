"""Per-minute sending rate: a token bucket per account, shared by every process and node.

A plan's `rate_per_minute` R is a bucket of R emails that refills at R a minute: up to R at
once, then one every T = 60/R seconds. It is kept as GCRA keeps it, one number per key:
`full_at`, when the bucket is full again. Taking n emails at `now` is allowed when
max(full_at, now) + n*T <= now + R*T (a minute), and moves `full_at` to that sum. Times are
integer nanoseconds and T is rounded down to one, so a full bucket holds exactly R emails (sums
of float seconds drift: seven times 60/7 s can come out above 60).

Each account's bucket has two copies:

- `RateLimiter`, in each process's memory, answers every RCPT (and API request) at once, with
  no database round trip: 451 4.7.1 (429) and the time until an email fits, as before.
- The account's `send_rates` row is the bucket all processes and nodes share. It is taken from
  in the very transaction that stores the message (`RateGate`: one conditional upsert in the
  spool writer's group commit, no round trip of its own), so the message is stored only if its
  emails fit; if not, nothing is stored and the sender gets the same refusal at the end of DATA
  (the API: 429). PostgreSQL locks the row and evaluates the condition on its latest committed
  version; SQLite has one writer. So together they store what one bucket allows: in any W
  seconds at most R + R*(W + D)/60 emails, D the longest a transaction stayed open between its
  first RCPT and its commit (its emails are paid for from that RCPT, as the process's copy let
  them through one by one); with short transactions, a burst of R and at most 2R in a calendar
  minute, as for any bucket of R. Each node brings its own clock: one running s seconds ahead
  counts up to s*R/60 emails early, so keep clocks in sync (NTP), as the UTC days of the daily
  limits need too.

Every answer of the database sets the process's copy to the shared state (it never stays
behind it), so once an account's bucket is spent every process refuses its RCPTs again; only
messages from different processes racing for the last emails are refused at the end of DATA.
While the database cannot be reached the process's copy decides alone, and no message can be
stored anyway. The inbound policy's per-address rate uses a `RateLimiter` alone, per process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass(slots=True)
class RateGate:
    """Take `n` emails from the account's shared bucket in the transaction that stores them
    (mailrelay.spool.writer), or store nothing and fail with `refusal(wait)`. The writer fills
    in the answer: `full_at` and `wait` (0.0: taken)."""

    account_id: int
    rate: int
    n: int
    since: float  # when the first of them was let through (RCPT); their refill counts from there
    refusal: Callable[[float], BaseException]
    full_at: int | None = None
    wait: float = 0.0


def _build_take(dialect: str) -> ReturningInsert[Any]:
    insert = postgresql.insert(send_rates) if dialect == "postgresql" else sqlite.insert(send_rates)
    now = sa.bindparam("now", type_=sa.BigInteger)
    cost = sa.bindparam("cost", type_=sa.BigInteger)  # the emails' intervals, all together
    floor = sa.bindparam("floor", type_=sa.BigInteger)  # what they cost a full bucket (see take_all)
    burst = sa.bindparam("burst", type_=sa.BigInteger)  # rate intervals: a full bucket
    end = sa.case((send_rates.c.full_at + cost > floor, send_rates.c.full_at + cost), else_=floor)
    return (insert.values(account_id=sa.bindparam("account_id", type_=sa.Integer), full_at=floor)
            .on_conflict_do_update(index_elements=[send_rates.c.account_id], set_={"full_at": end},
                                   where=end <= now + burst)
            .returning(send_rates.c.full_at))  # a row back only if inserted or updated


# Built once per dialect, as quota.usage's upsert: this runs in every group commit with rated mail.
_TAKE = {name: _build_take(name) for name in ("postgresql", "sqlite")}


def take_all(conn: Connection, gates: Sequence[RateGate], now: float) -> bool:
    """Take the emails of `gates` (one account, one rate), as if one after the other in this
    order, if they all fit: True, each gate answered. False, and nothing taken, if not.

    The emails of a gate were let through one by one since its `since` (the RCPTs of a
    transaction), so the bucket pays for them from then: a gate moves full_at to
    max(full_at, since) + n*T, and takes them if that is <= now + R*T. One after the other,
    full_at ends at max(full_at + C, F), C the sum of all their n*T and F the largest of
    since_j + (n*T of gate j and those after it): one statement for all, however many.
    """
    at, interval = to_ns(now), interval_ns(gates[0].rate)
    cost = floor = 0
    for gate in reversed(gates):
        cost += gate.n * interval
        floor = max(floor, min(to_ns(gate.since), at) + cost)
    burst = gates[0].rate * interval
    if floor > at + burst:  # not even a full bucket would do
        return False
    row = conn.execute(_TAKE["postgresql" if conn.dialect.name == "postgresql" else "sqlite"],
                       {"account_id": gates[0].account_id, "now": at, "cost": cost, "floor": floor,
                        "burst": burst}).first()
    if row is None:
        return False
    for gate in gates:
        gate.full_at, gate.wait = int(row[0]), 0.0
    return True


def take_shared(conn: Connection, gate: RateGate, now: float) -> None:
    """Take `gate.n` emails from the account's shared bucket, inside the caller's transaction,
    and write the answer into `gate`. One statement (two when refused: the wait is read back)."""
    if take_all(conn, [gate], now):
        return
    at = to_ns(now)
    stored = conn.execute(sa.select(send_rates.c.full_at).where(send_rates.c.account_id == gate.account_id)).scalar()
    gate.full_at = int(stored) if stored is not None else min(to_ns(gate.since), at)
    # When they would fit, taken at once: a retry sends them together.
    gate.wait = max(admit(gate.full_at, at, gate.n, gate.rate)[1], 1e-9)
