"""Periods and reset times, the per-minute token bucket, and plan lookup: pure, no I/O."""

from __future__ import annotations

import calendar
import logging

import pytest

from mailrelay.quota.plans import Plans
from mailrelay.quota.rate import RateLimiter, to_ns
from mailrelay.quota.usage import day_period, day_reset, month_period, month_reset
from mailrelay.settings import PlanSettings


def at(*ymdhms: int) -> float:
    return float(calendar.timegm((*ymdhms, 0, 0, 0)[:6]))


@pytest.mark.parametrize(("now", "day", "month", "next_day", "next_month"), [
    (at(2026, 11, 27, 15, 0, 0), "D2026-11-27", "M2026-11", at(2026, 11, 28), at(2026, 12, 1)),
    (at(2026, 11, 27, 0, 0, 0), "D2026-11-27", "M2026-11", at(2026, 11, 28), at(2026, 12, 1)),
    (at(2026, 12, 31, 23, 59, 59), "D2026-12-31", "M2026-12", at(2027, 1, 1), at(2027, 1, 1)),
    (at(2028, 2, 28, 12, 0, 0), "D2028-02-28", "M2028-02", at(2028, 2, 29), at(2028, 3, 1)),
])
def test_periods_are_utc_calendar_days_and_months(now: float, day: str, month: str, next_day: float,
                                                  next_month: float) -> None:
    assert (day_period(now), month_period(now)) == (day, month)
    assert (day_reset(now), month_reset(now)) == (next_day, next_month)
    assert day_period(day_reset(now)) != day and day_period(day_reset(now) - 1) == day


def test_rate_limiter_allows_a_burst_then_one_per_interval() -> None:
    rate = RateLimiter()
    assert [rate.take(1, 3, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take(1, 3, 100.0) == pytest.approx(20.0)  # 3 a minute: one every 20 s
    assert rate.take(2, 3, 100.0) == 0.0  # per account
    assert rate.take(1, 3, 110.0) == pytest.approx(10.0)
    assert rate.take(1, 3, 120.0) == 0.0
    assert rate.take(1, 3, 120.0) > 0.0
    rate.give_back(1, 3)  # refused for another reason: the email was not sent
    assert rate.take(1, 3, 120.0) == 0.0
    assert [rate.take(1, 3, 1000.0) for _ in range(4)][-1] > 0.0  # refilled to 3, never more
    assert rate.take(3, 3, 100.0, n=2) == 0.0 and rate.take(3, 3, 100.0, n=2) == pytest.approx(20.0)


@pytest.mark.parametrize("per_minute", [1, 3, 7, 60, 997, 10_007])
def test_a_full_bucket_holds_exactly_the_rate_whatever_its_interval(per_minute: int) -> None:
    # Integer nanoseconds, the bucket R intervals deep: exactly R fit, whatever the rounding (floats
    # of 60/7 s summed seven times can come out above 60 and refuse the seventh).
    rate, now = RateLimiter(), 1_764_000_000.123456
    assert all(rate.take(1, per_minute, now) == 0.0 for _ in range(per_minute))
    assert rate.take(1, per_minute, now) > 0.0


def test_the_process_bucket_learns_the_shared_one_and_never_falls_behind_it() -> None:
    rate, now = RateLimiter(), 1_000.0
    assert rate.take(1, 3, now) == 0.0  # this process: one of three
    rate.learn(1, to_ns(now) + 40_000_000_000)  # the database: two taken (another node took one)
    assert rate.take(1, 3, now) == 0.0
    assert rate.take(1, 3, now) == pytest.approx(20.0)  # the third, shared, was the last
    rate.learn(1, to_ns(now))  # an older answer does not undo what this process knows
    assert rate.take(1, 3, now) == pytest.approx(20.0)


def test_unknown_plan_is_the_default_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    plans = Plans([PlanSettings("free", daily_limit=200), PlanSettings("unlimited")], "free")
    assert plans.get("unlimited").daily_limit == 0
    caplog.set_level(logging.WARNING, logger="mailrelay.quota")
    assert plans.get("gold").name == "free"
    assert plans.get("gold").name == "free"
    assert len(caplog.records) == 1 and "'gold'" in caplog.records[0].getMessage()
    assert not plans.known("gold") and plans.known("free")
