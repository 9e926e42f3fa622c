"""What sending takes from an account's plan before it is accepted: emails from the shared
per-minute bucket (mailrelay.quota.rate) and from the daily and monthly counts
(mailrelay.quota.usage), in one op of the spool writer's transaction, so a plan with both
costs one round trip, and all or nothing is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.engine import Connection

from mailrelay.quota.rate import give_back_shared, take_shared
from mailrelay.quota.usage import release, reserve
from mailrelay.settings import PlanSettings

Limit = Literal["rate", "day", "month"]


@dataclass(frozen=True, slots=True)
class Taken:
    refused: Limit | None  # None: taken; else the limit that refused, having taken nothing
    wait: float = 0.0  # refused by the rate: seconds until the emails fit
    full_at: int | None = None  # the shared bucket as it stands after this (None: no rate)


def limits_counted(plan: PlanSettings) -> bool:
    """Does this plan take anything at RCPT (rather than count with the message)?"""
    return bool(plan.rate_per_minute or plan.daily_limit or plan.monthly_limit)


def take(conn: Connection, account_id: int, n: int, plan: PlanSettings, now: float) -> Taken:
    """Take `n` emails of `plan` for the account: the rate first (its refusal answers the
    soonest retry), then today and this month. Run inside the caller's transaction."""
    full_at = None
    if plan.rate_per_minute:
        shared = take_shared(conn, account_id, n, plan.rate_per_minute, now)
        if shared.wait:
            return Taken("rate", shared.wait, shared.full_at)
        full_at = shared.full_at
    if plan.daily_limit or plan.monthly_limit:
        period = reserve(conn, account_id, n, daily_limit=plan.daily_limit,
                         monthly_limit=plan.monthly_limit, now=now)
        if period is not None:
            if plan.rate_per_minute:
                full_at = give_back_shared(conn, account_id, n, plan.rate_per_minute)
            return Taken(period, 0.0, full_at)
    return Taken(None, 0.0, full_at)


def untake(conn: Connection, account_id: int, n: int, plan: PlanSettings, taken_at: float) -> None:
    """Give back what `take` took for emails that were not sent after all."""
    if plan.rate_per_minute:
        give_back_shared(conn, account_id, n, plan.rate_per_minute)
    if plan.daily_limit or plan.monthly_limit:
        release(conn, account_id, n, taken_at)
