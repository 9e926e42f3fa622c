"""Sending statistics counted from the event log, per day, week or month, in SendGrid's metrics.

Counting happens in the database (one GROUP BY over the account's events in the date range),
so an answer costs one row per day and metric whatever the volume. How our events map onto
SendGrid's metrics: `requests` and `processed` count `processed` events (one per accepted
recipient); `delivered` and `deferred` their events; a bounce whose enhanced status is 5.7.x
(refused by policy) is a `block`, 5.1.3 (bad address syntax) an `invalid_email`, any other
bounce, an expiry or an operator's bounce a `bounce`; a `dropped` recipient (on the suppression
list) counts as `spam_report_drops` or `unsubscribe_drops` when its reason names that list, else
`bounce_drops`. Opens, clicks, spam reports and unsubscribes are not tracked: always 0.
Days are UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mailrelay.core import status
from mailrelay.store.schema import events, messages

METRICS = ("blocks", "bounce_drops", "bounces", "clicks", "deferred", "delivered", "invalid_emails", "opens",
           "processed", "requests", "spam_report_drops", "spam_reports", "unique_clicks", "unique_opens",
           "unsubscribe_drops", "unsubscribes")
AGGREGATIONS = ("day", "week", "month")
MAX_DAYS = 3 * 366  # longest date range answered
MAX_CATEGORIES = 10  # per request, as SendGrid allows
_DAY = 86400

_BOUNCES = (status.BOUNCED, status.EXPIRED, status.EV_BOUNCED_BY_OPERATOR)
_COUNTED = (status.EV_PROCESSED, status.DELIVERED, status.DEFERRED, status.DROPPED, *_BOUNCES)


def _lit(text: str) -> Any:
    """A SQL string literal (no bind parameter: the expression is compared in GROUP BY)."""
    return sa.literal_column("'" + text.replace("'", "''") + "'")


def _enhanced(reply: Any, prefix: str) -> Any:
    """The reply's enhanced status code starts with `prefix` ("550 5.7.1 ..." or "5.7.1 ...")."""
    return sa.or_(reply.like(_lit(f"5__ {prefix}%")), reply.like(_lit(f"5__-{prefix}%")),
                  reply.like(_lit(f"{prefix}%")))


def _metric() -> Any:
    """The metric an event row counts in (processed also counts as requests, added later)."""
    reply = sa.func.coalesce(events.c.reply, events.c.detail)
    return sa.case(
        (events.c.type == _lit(status.EV_PROCESSED), _lit("processed")),
        (events.c.type == _lit(status.DELIVERED), _lit("delivered")),
        (events.c.type == _lit(status.DEFERRED), _lit("deferred")),
        (sa.and_(events.c.type == _lit(status.DROPPED), events.c.detail.like(_lit("%spam%"))),
         _lit("spam_report_drops")),
        (sa.and_(events.c.type == _lit(status.DROPPED), events.c.detail.like(_lit("%unsubscribe%"))),
         _lit("unsubscribe_drops")),
        (events.c.type == _lit(status.DROPPED), _lit("bounce_drops")),
        (_enhanced(reply, "5.7."), _lit("blocks")),
        (_enhanced(reply, "5.1.3"), _lit("invalid_emails")),
        else_=_lit("bounces"))


def _day_number(dialect: str) -> Any:
    """Days since the epoch of an event (UTC)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(events.c.at / _DAY), sa.Integer)
    return sa.cast(events.c.at / _DAY, sa.Integer)  # SQLite truncates: the floor for t >= 0


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date
    end: dt.date  # inclusive
    aggregated_by: str = "day"

    def bounds(self) -> tuple[float, float]:
        """[start, end + 1 day) as epoch seconds."""
        first = dt.datetime.combine(self.start, dt.time(), dt.UTC).timestamp()
        last = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
        return first, last

    def bucket(self, day: dt.date) -> dt.date:
        """The first day of `day`'s bucket, never before the period's start."""
        if self.aggregated_by == "week":
            day = day - dt.timedelta(days=day.weekday())  # ISO weeks start on Monday
        elif self.aggregated_by == "month":
            day = day.replace(day=1)
        return max(day, self.start)

    def buckets(self) -> list[dt.date]:
        out: list[dt.date] = []
        day = self.start
        while day <= self.end:
            first = self.bucket(day)
            if not out or out[-1] != first:
                out.append(first)
            day += dt.timedelta(days=1)
        return out


def _empty() -> dict[str, int]:
    return dict.fromkeys(METRICS, 0)


def _add(into: dict[str, int], metric: str, count: int) -> None:
    into[metric] += count
    if metric == "processed":
        into["requests"] += count


def _epoch_day(number: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(number))


def global_stats(engine: sa.Engine, account_id: int, period: Period) -> list[dict[str, Any]]:
    """`[{"date": "YYYY-MM-DD", "stats": [{"metrics": {...}}]}]`, one entry per bucket, oldest first."""
    first, last = period.bounds()
    inner = (sa.select(_day_number(engine.dialect.name).label("d"), _metric().label("m"))
             .where(events.c.account_id == account_id, events.c.at >= first, events.c.at < last,
                    events.c.type.in_(_COUNTED))
             .subquery())
    query = sa.select(inner.c.d, inner.c.m, sa.func.count()).group_by(inner.c.d, inner.c.m)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    totals = {b: _empty() for b in period.buckets()}
    for day, metric, count in rows:
        _add(totals[period.bucket(_epoch_day(day))], metric, int(count))
    return [{"date": b.isoformat(), "stats": [{"metrics": m}]} for b, m in totals.items()]


def _category_source(dialect: str) -> Any:
    """A table of one column, `value`: each category of the joined message."""
    if dialect == "postgresql":
        tags = sa.cast(messages.c.tags, postgresql.JSONB)
        return sa.func.jsonb_array_elements_text(tags["category"]).table_valued("value").render_derived()
    return sa.func.json_each(messages.c.tags, "$.category").table_valued("value")


def category_stats(engine: sa.Engine, account_id: int, period: Period,
                   categories: Sequence[str]) -> list[dict[str, Any]]:
    """`[{"date", "stats": [{"metrics", "name", "type": "category"}]}]`: each asked category in
    each bucket (a message's events count once in each of its categories)."""
    first, last = period.bounds()
    wanted = list(dict.fromkeys(categories))
    source = _category_source(engine.dialect.name)
    inner = (sa.select(_day_number(engine.dialect.name).label("d"), source.c.value.label("c"),
                       _metric().label("m"))
             .select_from(events.join(messages, messages.c.id == events.c.message_id))
             .join(source, sa.true())
             .where(events.c.account_id == account_id, messages.c.account_id == account_id,
                    events.c.at >= first, events.c.at < last, events.c.type.in_(_COUNTED),
                    messages.c.tags.is_not(None), source.c.value.in_(wanted))
             .subquery())
    query = sa.select(inner.c.d, inner.c.c, inner.c.m, sa.func.count()).group_by(inner.c.d, inner.c.c, inner.c.m)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    totals = {b: {c: _empty() for c in wanted} for b in period.buckets()}
    for day, category, metric, count in rows:
        _add(totals[period.bucket(_epoch_day(day))][category], metric, int(count))
    return [{"date": b.isoformat(),
             "stats": [{"metrics": m, "name": c, "type": "category"} for c, m in per.items()]}
            for b, per in totals.items()]
