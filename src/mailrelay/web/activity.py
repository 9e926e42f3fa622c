"""The account's activity (live) and one message's page."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from mailrelay.core.status import BOUNCED, DEFERRED, DELIVERED, PENDING
from mailrelay.events.activity import STATUSES, Search, latest_activity, search_messages, split_msg_id
from mailrelay.spool.reader import MessageDetail, QueueReader, RecipientDetail, why_waiting
from mailrelay.web.common import not_found, page, run, services, signed_in, signed_in_page

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
    rows = await _rows(request, session.account_id, search)
    query = urllib.parse.urlencode({k: v for k, v in given.items() if v})
    return signed_in_page(request, session, "activity.html", title="Activity", rows=rows, given=given,
                          statuses=sorted(STATUSES), query=query)


@router.get("/activity/rows")
async def activity_rows(request: Request) -> Response:
    """The activity table's rows, for the page's live updates."""
    session = await signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    rows = await _rows(request, session.account_id, _search(request)[0])
    return page("activity_rows.html", rows=rows)


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


FILTERS = {"to": "to_email", "from": "from_email", "subject": "subject", "status": "status"}


def _search(request: Request) -> tuple[Search, dict[str, str]]:
    """The activity filters of the query string (exact recipient, sender or subject; a status
    group), as the API's activity search reads them; unknown statuses are left out."""
    given = {k: request.query_params.get(k, "").strip()[:320] for k in FILTERS}
    if given["status"] not in STATUSES:
        given["status"] = ""
    return Search(equals={FILTERS[k]: v for k, v in given.items() if v}), given


async def _rows(request: Request, account_id: int, search: Search) -> list[dict[str, Any]]:
    svc = services(request)
    rows = await run(request, search_messages, svc.engine, account_id, search, ACTIVITY_ROWS)
    for row in rows:
        row["queue_id"] = split_msg_id(row["msg_id"])[1]
    return rows


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
                          timeline=timeline(found), waiting=lambda r: _waiting(r, now))


def _waiting(r: RecipientDetail, now: float) -> str:
    return why_waiting(r, now) if r.status in PENDING else ""
