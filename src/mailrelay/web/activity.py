"""The account's activity (live, filtered, paged by cursor) and one message's page with its
actions (retry now, bounce, delete), each the queue's own operation (mailrelay.delivery.operator,
as `mailrelay queue retry | bounce | delete` runs it) on a message of the signed-in account."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from mailrelay.core.status import BOUNCED, DEFERRED, DELIVERED, PENDING
from mailrelay.delivery import operator
from mailrelay.events.activity import STATUSES, Cursor, Page, Search, activity_page, latest_activity
from mailrelay.spool.reader import MessageDetail, QueueReader, RecipientDetail, why_waiting
from mailrelay.web.common import NOTICES, back, not_found, page, posted, run, services, signed_in, signed_in_page

ACTIVITY_ROWS = 50
QUEUE_ID = re.compile(r"[0-9A-Z]{16}")
LIVE_EVERY = 1.0  # seconds between checks for news of the account
LIVE_FOR = 300.0  # seconds one event stream lasts

router = APIRouter(include_in_schema=False)


@router.get("/activity")
async def activity(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    search, given = _search(request)
    older, newer = _cursor(request, "older"), _cursor(request, "newer")
    found = await _page(request, session.account_id, search, older, newer)
    query = urllib.parse.urlencode({k: v for k, v in given.items() if v})
    return signed_in_page(request, session, "activity.html", title="Activity", rows=found.rows, given=given,
                          statuses=sorted(STATUSES), query=query, older=found.older, newer=found.newer,
                          first=older is None and newer is None)


@router.get("/activity/rows")
async def activity_rows(request: Request) -> Response:
    """The activity table's first page of rows, for the page's live updates."""
    session = await signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    found = await _page(request, session.account_id, _search(request)[0], None, None)
    return page("activity_rows.html", rows=found.rows)


@router.get("/activity/stream")
async def activity_stream(request: Request) -> Response:
    """Server-sent events: `changed` whenever the account's newest message or event changes
    (checked every LIVE_EVERY seconds); the stream ends after LIVE_FOR seconds and the
    browser's EventSource opens a new one."""
    svc = services(request)
    session = await signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    account_id = session.account_id
    loop = asyncio.get_running_loop()

    async def changes() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        seen = await loop.run_in_executor(svc.executor, latest_activity, svc.engine, account_id)
        deadline = loop.time() + LIVE_FOR
        stopping: asyncio.Event = request.app.state.stopping
        while loop.time() < deadline and not await request.is_disconnected():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), LIVE_EVERY)
            if stopping.is_set():
                return
            now = await loop.run_in_executor(svc.executor, latest_activity, svc.engine, account_id)
            if now != seen:
                seen = now
                yield b"event: changed\ndata: {}\n\n"

    return StreamingResponse(changes(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


FILTERS = {"to": "to_email", "from": "from_email", "subject": "subject", "status": "status",
           "category": "category"}
DATES = ("from_date", "to_date")  # YYYY-MM-DD, UTC, both inclusive


def _search(request: Request) -> tuple[Search, dict[str, str]]:
    """The activity filters of the query string (exact recipient, sender, subject or category;
    a status group; the days the mail was sent, UTC, both inclusive), as the API's activity
    search reads them; unknown statuses and malformed dates are left out."""
    given = {k: request.query_params.get(k, "").strip()[:320] for k in (*FILTERS, *DATES)}
    if given["status"] not in STATUSES:
        given["status"] = ""
    days = {k: _day(given[k]) for k in DATES}
    for k, day in days.items():
        if day is None:
            given[k] = ""
    search = Search(equals={FILTERS[k]: given[k] for k in FILTERS if given[k]})
    if (start := days["from_date"]) is not None:
        search.sent_from = _midnight(start)
    if (end := days["to_date"]) is not None:
        search.sent_before = _midnight(end + dt.timedelta(days=1))
    return search, given


def _day(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _cursor(request: Request, name: str) -> Cursor | None:
    return Cursor.parse(request.query_params.get(name, "")[:40])


async def _page(request: Request, account_id: int, search: Search, older: Cursor | None,
                newer: Cursor | None) -> Page:
    svc = services(request)
    return await run(request, lambda: activity_page(svc.engine, account_id, search, ACTIVITY_ROWS,
                                                    older_than=older, newer_than=None if older else newer))


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a message's timeline: an event, or a delivery attempt with its details."""

    at: float
    recipient: str | None
    what: str
    host: str | None = None
    ip: str | None = None
    tls: str | None = None
    reply: str | None = None


def timeline(m: MessageDetail) -> list[Step]:
    steps = [Step(e.at, e.recipient, e.type, reply=e.detail or None) for e in m.events
             if e.type not in (DELIVERED, DEFERRED, BOUNCED)]  # those are the attempts below
    steps += [Step(a.at, a.recipient, a.outcome, a.mx_host, a.ip, a.tls, a.reply) for a in m.attempts]
    return sorted(steps, key=lambda s: s.at)


async def find_message(request: Request, queue_id: str, account: str | None) -> MessageDetail | None:
    """The message `queue_id` of `account` (any account's when None: an operator), or None."""
    if not QUEUE_ID.fullmatch(queue_id):
        return None
    found = await run(request, QueueReader(services(request).engine).show, queue_id)
    if found is None or (account is not None and found.account != account):
        return None  # another account's message is not there at all
    return found


@router.get("/messages/{queue_id}")
async def message(request: Request, queue_id: str) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    found = await find_message(request, queue_id, session.account)
    if found is None:
        return not_found(request, session)
    now = time.time()
    return signed_in_page(request, session, "message.html", title=f"Message {found.id}", m=found,
                          timeline=timeline(found), waiting=lambda r: _waiting(r, now),
                          actions=ACTIONS if pending(found) else {})


def _waiting(r: RecipientDetail, now: float) -> str:
    return why_waiting(r, now) if r.status in PENDING else ""


def pending(m: MessageDetail) -> int:
    """How many of the message's recipients still wait for delivery: the actions are for those."""
    return sum(1 for r in m.recipients if r.status in PENDING)


# name: (button, what it does, the confirmation box's label); only on a message with pending recipients.
ACTIONS = {
    "retry": ("Retry now", "Every queued or deferred recipient is due at once (one that is being delivered "
                           "right now is left to that attempt).", "Yes, retry them now"),
    "bounce": ("Bounce", "Every pending recipient is marked bounced and the sender gets one bounce report "
                         "(DSN) about them; none is delivered any more.", "Yes, bounce them"),
    "delete": ("Delete", "The message and its recipients are removed from the queue without a bounce "
                         "report; nothing more is delivered and its page is gone.", "Yes, delete this message"),
}
NOTICES.update({
    "retried": "The pending recipients are due now.",
    "bounced": "The pending recipients were bounced; a bounce report went to the sender where asked for.",
    "deleted": "The message was deleted from the queue.",
    "unconfirmed": "Nothing was done: tick the box to confirm first.",
    "nothing-pending": "Nothing was done: no recipient of this message is waiting any more.",
    "busy": "Nothing was done: the waiting recipients are being delivered right now; try again after.",
    "gone": "The message is no longer in the queue.",
})


@router.post("/messages/{queue_id}/{action}")
async def message_action(request: Request, queue_id: str, action: str) -> Response:
    """Retry, bounce or delete a message of the signed-in account; asked for with a ticked
    confirmation box, else nothing happens. Another account's message is a 404, as is an
    unknown action."""
    done = await posted(request)
    if isinstance(done, Response):
        return done
    session, fields = done
    found = await find_message(request, queue_id, session.account)
    if found is None or action not in ACTIONS:
        return not_found(request, session)
    here = f"/messages/{found.id}"
    if fields.get("confirm") != "yes":
        return back(here, "unconfirmed")
    if not pending(found):
        return back(here, "nothing-pending")
    svc = services(request)
    code = await run(request, _act, svc.engine, action, found.id, svc.settings.server.hostname)
    return back("/activity" if code == "deleted" else here, code)


def _act(engine: sa.Engine, action: str, queue_id: str, hostname: str) -> str:
    """Run one action on the queue (in a transaction of its own); the notice for what came of it."""
    now = time.time()
    try:
        if action == "bounce":
            done = operator.bounce_message(engine, queue_id, now=now, hostname=hostname)
            return "bounced" if done.recipients else "busy" if done.in_delivery else "nothing-pending"
        with engine.begin() as conn:
            if action == "retry":
                return "retried" if operator.retry(conn, queue_id, now=now) else "nothing-pending"
            operator.delete(conn, queue_id, now=now)
            return "deleted"
    except operator.NoSuchMessage:  # deleted meanwhile
        return "gone"
