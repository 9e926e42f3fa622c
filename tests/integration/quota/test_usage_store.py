"""reserve / release / add_usage, and the shared per-minute bucket, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from mailrelay.quota.rate import RateGate, take_shared, to_ns
from mailrelay.quota.usage import add_usage, counts, release, reserve
from mailrelay.store.schema import accounts
from tests.integration.quota.conftest import DAY, NOON


def _account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(name=name, password_hash="x", created_at=0,
                                                         updated_at=0).returning(accounts.c.id)).scalar_one())


def test_reserve_counts_only_within_the_limits(engine: sa.Engine) -> None:
    a, b = _account(engine, "a"), _account(engine, "b")
    with engine.begin() as conn:
        got = [reserve(conn, a, 1, daily_limit=3, monthly_limit=4, now=NOON) for _ in range(4)]
        assert got == [None, None, None, "day"]
        assert counts(conn, a, NOON) == (3, 3)
        assert reserve(conn, a, 5, daily_limit=0, monthly_limit=4, now=NOON + DAY) == "month"
        assert reserve(conn, a, 1, daily_limit=3, monthly_limit=4, now=NOON + DAY) is None
        # The month refuses: the day it had already counted is given back in the same call.
        assert reserve(conn, a, 1, daily_limit=3, monthly_limit=4, now=NOON + DAY) == "month"
        assert counts(conn, a, NOON + DAY) == (1, 4)
        assert reserve(conn, b, 2, daily_limit=0, monthly_limit=0, now=NOON) is None  # no limits: counted
        assert counts(conn, b, NOON) == (2, 2)


def test_release_gives_back_to_the_reservation_day_never_below_zero(engine: sa.Engine) -> None:
    a = _account(engine, "a")
    with engine.begin() as conn:
        reserve(conn, a, 2, daily_limit=10, monthly_limit=0, now=NOON)
        add_usage(conn, {a: 1}, NOON + DAY)
        release(conn, a, 1, NOON)  # a day later: still to the day it was reserved on
        assert counts(conn, a, NOON) == (1, 2)
        assert counts(conn, a, NOON + DAY) == (1, 2)
        release(conn, a, 5, NOON)
        assert counts(conn, a, NOON) == (0, 0)
        release(conn, a, 1, NOON - 40 * DAY)  # no rows for that day: nothing happens
        assert counts(conn, a, NOON + DAY) == (1, 0)


def test_the_shared_bucket_takes_within_the_rate(engine: sa.Engine) -> None:
    a, b = _account(engine, "a"), _account(engine, "b")

    def take(account: int, n: int, now: float, since: float | None = None) -> RateGate:
        gate = RateGate(account, 3, n, now if since is None else since, ValueError)
        with engine.begin() as conn:
            take_shared(conn, gate, now)
        return gate

    assert [take(a, 1, NOON).wait for _ in range(4)] == [0.0, 0.0, 0.0, 20.0]
    assert take(b, 3, NOON).wait == 0.0  # per account; a full bucket at once
    assert take(a, 1, NOON + 20).wait == 0.0  # one interval later, one more
    refused = take(a, 2, NOON + 20)
    assert refused.wait == 40.0 and refused.full_at == to_ns(NOON + 80)
    assert take(a, 4, NOON + 3600).wait == 20.0  # more than the bucket at once: never
    # Four let through one by one over a minute (by a process's bucket) are paid for from the
    # first: the bucket has refilled meanwhile, and two of three are left.
    assert take(a, 4, NOON + 3660, since=NOON + 3600).wait == 0.0
    assert [take(a, 1, NOON + 3660).wait for _ in range(3)] == [0.0, 0.0, 20.0]
