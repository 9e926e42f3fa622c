"""The account's usage (/usage): today's and this month's count against its plan (quota), and
mail per day over the last 30 days as an SVG chart drawn here, on the server.

The counts are the plan's counters (quota.plans.usage_report, as `account usage` and the
operator API show them); the chart's numbers are the API's /v3/stats (events.stats), per UTC
day: sent is SendGrid's `processed` (each accepted recipient), bounced its bounces, blocks and
invalid emails together. The SVG carries no script and no style attribute: its colours come
from classes in dashboard.css, its numbers are also in a table for screen readers.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailrelay.events.stats import Period, global_stats
from mailrelay.quota.plans import Plans, UsageReport, usage_report
from mailrelay.web.common import run, services, signed_in, signed_in_page
from mailrelay.web.services import WebServices

DAYS = 30
SERIES = (("sent", "Sent"), ("delivered", "Delivered"), ("bounced", "Bounced"), ("deferred", "Deferred"))
# The chart's box, in SVG user units (it scales with the page through viewBox).
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 28, 34, 28

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Day:
    date: str  # YYYY-MM-DD (UTC)
    counts: dict[str, int]  # by SERIES name


def per_day(rows: list[dict[str, Any]]) -> list[Day]:
    """global_stats' days as the chart's four numbers."""
    out = []
    for row in rows:
        m = row["stats"][0]["metrics"]
        out.append(Day(row["date"], {"sent": m["processed"], "delivered": m["delivered"],
                                     "bounced": m["bounces"] + m["blocks"] + m["invalid_emails"],
                                     "deferred": m["deferred"]}))
    return out


def nice_top(value: int) -> int:
    """The y axis' top: the smallest 1, 2 or 5 times a power of 10 at least `value` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def chart(days: list[Day]) -> dict[str, Any]:
    """The SVG's geometry: each series' points (x, y, day, value), the y ticks, the x labels."""
    top = nice_top(max((d.counts[name] for d in days for name, _ in SERIES), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + i * step, 1)

    def y(v: float) -> float:
        return round(TOP + plot_h - v / top * plot_h, 1)

    series = [{"name": name, "label": label,
               "points": [(x(i), y(d.counts[name]), d.date, d.counts[name]) for i, d in enumerate(days)]}
              for name, label in SERIES]
    ticks = sorted({0, top, *([top // 2] if top % 2 == 0 else [])})
    labels = [(x(i), d.date[5:]) for i, d in enumerate(days) if (len(days) - 1 - i) % 7 == 0]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "bottom": TOP + plot_h,
            "series": series, "ticks": [(y(t), t) for t in ticks], "labels": labels, "top": TOP}


def _load(svc: WebServices, account: str, account_id: int, now: float) -> tuple[UsageReport | None, list[Day]]:
    s = svc.settings
    report = usage_report(svc.engine, account, Plans(s.plans, s.accounts.default_plan), now)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    rows = global_stats(svc.engine, account_id, Period(today - dt.timedelta(days=DAYS - 1), today))
    return report, per_day(rows)


@router.get("/usage")
async def usage(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    report, days = await run(request, _load, services(request), session.account, session.account_id, time.time())
    totals = {name: sum(d.counts[name] for d in days) for name, _ in SERIES}
    return signed_in_page(request, session, "usage.html", title="Usage", report=report, days=days,
                          chart=chart(days), series=SERIES, totals=totals,
                          smtp=services(request).settings.smtp)
