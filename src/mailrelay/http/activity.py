"""SendGrid's read-only views of sent mail: `/v3/stats`, `/v3/categories/stats`, `/v3/messages`.

Numbers and messages come from the event log and the queue (mailrelay.events.stats and
mailrelay.events.activity), always for the caller's account only: another account's message is
a 404, the same as a missing one. The handlers are sync, so FastAPI runs their queries in its
thread pool, off the event loop.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from mailrelay.core.text import has_control_chars
from mailrelay.events import activity, stats
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem

router = APIRouter(tags=["Stats and Email Activity"])

MAX_CATEGORY = 255  # characters of one category name
MAX_MSG_ID = 120  # characters: an X-Message-Id, a dot and a queue id are 39
EARLIEST = dt.date(1970, 1, 1)
LATEST = dt.date(9000, 1, 1)

_ERRORS: dict[str, Any] = {"application/json": {"schema": {
    "type": "object", "required": ["errors"], "properties": {"errors": {"type": "array", "items": {
        "type": "object", "properties": {"message": {"type": "string"}, "field": {"type": ["string", "null"]},
                                         "help": {"type": ["string", "null"]}}}}}}}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "a bad or unsupported parameter (`field` names it)", "content": _ERRORS},
    401: {"description": "bad key", "content": _ERRORS},
    403: {"description": "the key lacks the scope", "content": _ERRORS},
    429: {"description": "too many failed keys from this address", "content": _ERRORS}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such message of this account",
                                                      "content": _ERRORS}}


class Metrics(BaseModel):
    blocks: int
    bounce_drops: int
    bounces: int
    clicks: int
    deferred: int
    delivered: int
    invalid_emails: int
    opens: int
    processed: int
    requests: int
    spam_report_drops: int
    spam_reports: int
    unique_clicks: int
    unique_opens: int
    unsubscribe_drops: int
    unsubscribes: int


class Stat(BaseModel):
    metrics: Metrics


class DayStats(BaseModel):
    date: str
    stats: list[Stat]


class CategoryStat(Stat):
    name: str
    type: str


class CategoryDayStats(BaseModel):
    date: str
    stats: list[CategoryStat]


class MessageSummary(BaseModel):
    from_email: str
    msg_id: str
    subject: str
    to_email: str
    status: str
    opens_count: int
    clicks_count: int
    last_event_time: str


class MessageList(BaseModel):
    messages: list[MessageSummary]


class Event(BaseModel):
    event_name: str
    processed: str
    reason: str | None
    attempt_num: int
    mx_server: str | None
    email: str | None  # which recipient (ours: a message can have several)
    bounce_type: str | None = None


class Recipient(BaseModel):
    to_email: str
    status: str


class MessageDetail(MessageSummary):
    recipients: list[Recipient]
    categories: list[str]
    unique_args: str
    originating_ip: str
    template_id: str | None
    asm_group_id: int | None
    teammate: str
    api_key_id: str | None
    outbound_ip: str | None
    outbound_ip_type: str | None
    events: list[Event]


def _date(value: str | None, name: str, default: dt.date | None = None) -> dt.date:
    if value is None and default is not None:
        return default
    try:
        if value is None or len(value) != 10:
            raise ValueError
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise APIError(400, [Problem("must be a date as YYYY-MM-DD", name)]) from None
    if not EARLIEST <= day <= LATEST:
        raise APIError(400, [Problem(f"must be between {EARLIEST} and {LATEST}", name)])
    return day


def _period(start_date: str, end_date: str | None, aggregated_by: str) -> stats.Period:
    start = _date(start_date, "start_date")
    end = _date(end_date, "end_date", default=max(start, dt.datetime.now(dt.UTC).date()))
    if end < start:
        raise APIError(400, [Problem("end_date must not be before start_date", "end_date")])
    if (end - start).days >= stats.MAX_DAYS:
        raise APIError(400, [Problem(f"at most {stats.MAX_DAYS} days at a time", "end_date")])
    return stats.Period(start, end, aggregated_by)


Aggregation = Literal["day", "week", "month"]


@router.get("/v3/stats", response_model=list[DayStats], responses=_REFUSED,
            summary="Global email statistics (SendGrid's metrics, from our events)")
def global_stats(request: Request, who: Annotated[Caller, Depends(needs("stats.read"))],
                 start_date: Annotated[str, Query(max_length=10)],
                 end_date: Annotated[str | None, Query(max_length=10)] = None,
                 aggregated_by: Aggregation = "day") -> list[dict[str, Any]]:
    period = _period(start_date, end_date, aggregated_by)
    return stats.global_stats(services(request).engine, who.account.id, period)


@router.get("/v3/categories/stats", response_model=list[CategoryDayStats], responses=_REFUSED,
            summary="Email statistics per category")
def category_stats(request: Request, who: Annotated[Caller, Depends(needs("categories.stats.read"))],
                   start_date: Annotated[str, Query(max_length=10)],
                   categories: Annotated[list[str], Query(min_length=1, max_length=stats.MAX_CATEGORIES)],
                   end_date: Annotated[str | None, Query(max_length=10)] = None,
                   aggregated_by: Aggregation = "day") -> list[dict[str, Any]]:
    period = _period(start_date, end_date, aggregated_by)
    for name in categories:
        if not name or len(name) > MAX_CATEGORY or has_control_chars(name):
            raise APIError(400, [Problem(f"a category is 1 to {MAX_CATEGORY} characters without control "
                                         "characters", "categories")])
    return stats.category_stats(services(request).engine, who.account.id, period, categories)


@router.get("/v3/messages", response_model=MessageList, responses=_REFUSED,
            summary="Email activity: the account's sent messages, newest first")
def list_messages(request: Request, who: Annotated[Caller, Depends(needs("messages.read"))],
                  query: Annotated[str, Query(max_length=activity.MAX_QUERY)] = "",
                  limit: Annotated[int, Query(ge=1, le=activity.MAX_LIMIT)] = 10) -> dict[str, Any]:
    if has_control_chars(query):
        raise APIError(400, [Problem("the query has control characters", "query")])
    try:
        search = activity.parse_query(query) if query.strip() else activity.Search()
    except activity.QueryError as exc:
        raise APIError(400, [Problem(str(exc), "query")]) from None
    return {"messages": activity.search_messages(services(request).engine, who.account.id, search, limit)}


@router.get("/v3/messages/{msg_id}", response_model=MessageDetail, responses={**_REFUSED, **_NOT_FOUND},
            summary="One sent message with its events")
def get_message(request: Request, who: Annotated[Caller, Depends(needs("messages.read"))],
                msg_id: str) -> dict[str, Any]:
    found = None
    if len(msg_id) <= MAX_MSG_ID and not has_control_chars(msg_id):
        found = activity.get_message(services(request).engine, who.account.id, msg_id)
    if found is None:
        raise APIError(404, "not found")
    return found
