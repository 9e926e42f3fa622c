"""`[accounts]` and `[plans.NAME]`: the plans accounts are on, built in and configured."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailrelay.settings.convert import ENV_PREFIX, ConfigError, build, named_tables


@dataclass(frozen=True, slots=True)
class AccountSettings:
    default_plan: str = "free"  # the plan of accounts created without --plan


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """`[plans.NAME]`: limits of the accounts on plan NAME; 0 means no limit."""

    name: str
    daily_limit: int = 0  # emails (recipients) per UTC calendar day
    monthly_limit: int = 0  # per UTC calendar month
    max_recipients_per_message: int = 0  # 0: smtp.max_recipients
    max_message_size: int = 0  # bytes; 0: smtp.max_message_size
    rate_per_minute: int = 0  # emails per minute, all nodes together (mailrelay.quota.rate)


# Built in, and can be overridden or added to with [plans.NAME]: SendGrid's free plan sends
# 200 emails a day.
DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "free": {"daily_limit": 200},
    "unlimited": {},
}


def build_plans(raw: Mapping[str, Any], source: str, env: Mapping[str, str]) -> tuple[PlanSettings, ...]:
    """The built-in plans, changed by `[plans.NAME]`, then the new ones in file order."""
    out = []
    for name, user in named_tables(DEFAULT_PLANS, raw, source, "plans", " daily_limit = 1000"):
        if not name or len(name) > 32 or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(source, f"plans.{name}", "a plan name is 1-32 letters, digits, - or _")
        plan = build(PlanSettings, user, source, f"plans.{name}", env, f"{ENV_PREFIX}PLAN_{name}",
                     extra={"name": name}, defaults=DEFAULT_PLANS.get(name, {}))
        for f in dataclasses.fields(PlanSettings):
            value = getattr(plan, f.name)
            if isinstance(value, int) and value < 0:
                raise ConfigError(source, f"plans.{name}.{f.name}", f"expected 0 (no limit) or more, got {value}")
        out.append(plan)
    return tuple(out)
