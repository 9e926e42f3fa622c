"""`mailrelay account usage|plan`: plans and what an account has used."""

from __future__ import annotations

import argparse
import time
from typing import Any

from mailrelay.accounts.service import AccountError, validate_plan
from mailrelay.cli.common import open_from_args
from mailrelay.cli.output import format_size, format_table, format_time, to_json
from mailrelay.quota.plans import Plans, set_plan, usage_json, usage_report
from mailrelay.settings import Settings


def add_account_arguments(acc: Any) -> None:
    """Add this module's subcommands to `mailrelay account`."""
    p = acc.add_parser("usage", help="emails sent today and this month against the plan's limits")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_usage)

    p = acc.add_parser("plan", help="put an account on another plan ([plans.NAME] in the config)")
    p.add_argument("name")
    p.add_argument("plan")
    p.set_defaults(func=cmd_plan)


def _plans(settings: Settings) -> Plans:
    return Plans(settings.plans, settings.accounts.default_plan)


def cmd_usage(args: argparse.Namespace) -> int:
    settings, engine = open_from_args(args)
    try:
        report = usage_report(engine, args.name, _plans(settings), time.time())
    finally:
        engine.dispose()
    if report is None:
        raise AccountError(f"no account named {args.name!r}")
    if args.json:
        print(to_json(usage_json(report, settings.smtp)))
        return 0
    plan = report.plan
    if report.limits.name != plan:
        plan += f" (not in the config: the limits of the default plan {report.limits.name} apply)"
    print(f"account {report.account}, plan {plan}")
    rows = [(f"{label} {u.period}", u.sent, u.limit or None, u.remaining, format_time(u.resets_at))
            for label, u in (("today", report.today), ("month", report.month))]
    print(format_table(("period", "sent", "limit", "left", "resets (UTC)"), rows, align="<>>>"))
    lim = report.limits
    rate = f"{lim.rate_per_minute} emails a minute" if lim.rate_per_minute else "no limit"
    print(f"per message: at most {lim.max_recipients_per_message or settings.smtp.max_recipients} "
          f"recipients and {format_size(lim.max_message_size or settings.smtp.max_message_size)}; "
          f"rate: {rate}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    settings, engine = open_from_args(args)
    try:
        plan = validate_plan(args.plan, (p.name for p in settings.plans))
        old = set_plan(engine, args.name, plan, time.time())
    finally:
        engine.dispose()
    if old is None:
        raise AccountError(f"no account named {args.name!r}")
    # The SMTP server reads an account's plan when it logs in; open sessions keep the old one.
    print(f"account {args.name} is now on plan {plan} (was {old}); new SMTP sessions use it")
    return 0
