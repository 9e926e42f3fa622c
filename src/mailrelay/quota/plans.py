"""Which plan an account is on, changing it, and the usage report (`account usage`, the operator API)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailrelay.quota.usage import counts, day_period, day_reset, month_period, month_reset
from mailrelay.settings import PlanSettings, SMTPSettings
from mailrelay.store.schema import accounts

log = logging.getLogger("mailrelay.quota")


class Plans:
    """The configured plans; a name no longer in the config means the default plan."""

    def __init__(self, plans: Sequence[PlanSettings], default: str) -> None:
        self._plans = {p.name: p for p in plans}
        self.default = self._plans[default]
        self._warned: set[str] = set()

    def get(self, name: str) -> PlanSettings:
        plan = self._plans.get(name)
        if plan is not None:
            return plan
        if name not in self._warned:  # once per name and process: this runs per RCPT
            self._warned.add(name)
            log.warning("plan %r is not in the config ([plans.%s]); its accounts get the default "
                        "plan %r", name, name, self.default.name)
        return self.default

    def known(self, name: str) -> bool:
        return name in self._plans


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    period: str  # "2026-11-27" or "2026-11"
    sent: int
    limit: int  # 0: none
    resets_at: float

    @property
    def remaining(self) -> int | None:
        return max(0, self.limit - self.sent) if self.limit else None


@dataclass(frozen=True, slots=True)
class UsageReport:
    account: str
    plan: str  # the account's plan, as stored
    limits: PlanSettings  # the limits that apply (the default plan's if `plan` is unknown)
    today: PeriodUsage
    month: PeriodUsage


def usage_report(engine: sa.Engine, name: str, plans: Plans, now: float) -> UsageReport | None:
    """What account `name` has sent today and this month against its limits; None if no such account."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(accounts.c.id, accounts.c.plan)
                           .where(accounts.c.name == name)).first()
        if row is None:
            return None
        today, month = counts(conn, row.id, now)
    limits = plans.get(row.plan)
    return UsageReport(
        account=name, plan=row.plan, limits=limits,
        today=PeriodUsage(day_period(now)[1:], today, limits.daily_limit, day_reset(now)),
        month=PeriodUsage(month_period(now)[1:], month, limits.monthly_limit, month_reset(now)),
    )


def set_plan(engine: sa.Engine, name: str, plan: str, now: float) -> str | None:
    """Put account `name` on `plan` (already validated); returns its old plan, None if no such account."""
    with engine.begin() as conn:
        old = conn.execute(sa.select(accounts.c.plan).where(accounts.c.name == name)).scalar()
        if old is None:
            return None
        conn.execute(accounts.update().where(accounts.c.name == name)
                     .values(plan=plan, updated_at=now))
    return str(old)


def period_json(u: PeriodUsage) -> dict[str, Any]:
    return {"period": u.period, "sent": u.sent, "limit": u.limit or None, "remaining": u.remaining,
            "resets_at": u.resets_at}


def usage_json(r: UsageReport, smtp: SMTPSettings) -> dict[str, Any]:
    """The report as `account usage --json` and the operator API show it; 0 limits of the plan
    are smtp's."""
    return {"account": r.account, "plan": r.plan, "limits_of": r.limits.name,
            "today": period_json(r.today), "month": period_json(r.month),
            "max_recipients_per_message": r.limits.max_recipients_per_message or smtp.max_recipients,
            "max_message_size": r.limits.max_message_size or smtp.max_message_size,
            "rate_per_minute": r.limits.rate_per_minute or None}
