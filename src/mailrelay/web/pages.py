"""The dashboard's pages: sign-in, sign-out and the account's activity.

Sign-in takes the account's name and password (argon2, as SMTP AUTH); failures count with failed
SMTP logins and API keys from the same address (accounts.lockout), with the same slow-down and
lock-out. A session is a random token in the cookie `mr_session` (HttpOnly, SameSite=Strict,
Secure over TLS) and a row of web_sessions (accounts.websessions); every form carries the
session's CSRF token, and the sign-in form a token of its own, bound to a cookie (the browser
has no session yet). Every page reads only the signed-in account's data. Templates escape
everything they print (Jinja2 autoescape): message content is text here, never markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailrelay.accounts.websessions import WebSession
from mailrelay.core.status import BOUNCED, DEFERRED, DELIVERED, PENDING
from mailrelay.events.activity import STATUSES, Search, latest_activity, search_messages, split_msg_id
from mailrelay.smtp.limits import client_key
from mailrelay.spool.reader import MessageDetail, QueueReader, RecipientDetail, why_waiting
from mailrelay.web.security import SecurityHeaders
from mailrelay.web.services import WebServices

HERE = Path(__file__).parent
SESSION_COOKIE = "mr_session"
LOGIN_COOKIE = "mr_signin"  # binds the sign-in form's CSRF token to this browser
MAX_FORM = 4096  # bytes of a form body
ACTIVITY_ROWS = 50
QUEUE_ID = re.compile(r"[0-9A-Z]{16}")
LIVE_EVERY = 1.0  # seconds between checks for news of the account
LIVE_FOR = 300.0  # seconds one event stream lasts

_templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))
router = APIRouter(include_in_schema=False)


def install(api: FastAPI, services: WebServices) -> None:
    """The pages under `/`, and the security headers on every response of `api`."""
    api.state.web = services
    api.include_router(router)
    api.add_middleware(SecurityHeaders)


def _svc(request: Request) -> WebServices:
    found: WebServices = request.app.state.web
    return found


def _page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in parsed.items()}


async def _session(request: Request) -> WebSession | None:
    svc = _svc(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    return await asyncio.get_running_loop().run_in_executor(svc.executor, svc.sessions.get, token, time.time())


async def _signed_in(request: Request, *, page: bool = True) -> WebSession | Response:
    """The request's session, or the answer for a visitor without one: a page sends them to
    sign in, a part of a page (rows, events) is 401."""
    found = await _session(request)
    if found is not None:
        return found
    return RedirectResponse("/login", status_code=303) if page else Response(status_code=401)


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


def _cookie(response: Response, svc: WebServices, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=svc.secure_cookies)


STATIC = {"dashboard.css": "text/css", "live.js": "text/javascript"}


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return Response(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


@router.get("/")
async def home(request: Request) -> Response:
    signed_in = await _session(request)
    return RedirectResponse("/activity" if signed_in else "/login", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse("/activity", status_code=303)
    token = secrets.token_urlsafe(24)
    response = _page("login.html", title="Sign in", csrf=token, name="", error=None, account=None)
    _cookie(response, _svc(request), LOGIN_COOKIE, token, 3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    svc = _svc(request)
    form = await _form(request)
    token = request.cookies.get(LOGIN_COOKIE, "")
    name = form.get("name", "")[:255]
    if not _same(token, form.get("csrf", "")):
        return _page("login.html", 403, title="Sign in", csrf=token, name=name, account=None,
                     error="The form was too old or came from elsewhere; please sign in again.")
    where = client_key(request.client.host if request.client else "unknown")
    if svc.lockout.locked(where):
        return _page("login.html", 429, title="Sign in", csrf=token, name=name, account=None,
                     error="Too many failed sign-ins from your address; try again later.")
    loop = asyncio.get_running_loop()
    account = await loop.run_in_executor(svc.executor, svc.accounts.authenticate, name, form.get("password", ""))
    if account is None or name == "apikey":
        delay = svc.lockout.record_failure(where)
        if delay:
            await asyncio.sleep(delay)
        return _page("login.html", 401, title="Sign in", csrf=token, name=name, account=None,
                     error="The account name or the password is wrong.")
    session_token, session = await loop.run_in_executor(svc.executor, svc.sessions.create, account.id, time.time())
    response = RedirectResponse("/activity", status_code=303)
    _cookie(response, svc, SESSION_COOKIE, session_token, int(session.expires_at - time.time()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    svc = _svc(request)
    session = await _signed_in(request)
    if isinstance(session, Response):
        return session
    form = await _form(request)
    if not _same(session.csrf, form.get("csrf", "")):
        return HTMLResponse("The form was too old or came from elsewhere.", status_code=403)
    await asyncio.get_running_loop().run_in_executor(svc.executor, svc.sessions.end,
                                                     request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/activity")
async def activity(request: Request) -> Response:
    session = await _signed_in(request)
    if isinstance(session, Response):
        return session
    search, given = _search(request)
    rows = await _rows(_svc(request), session.account_id, search)
    query = urllib.parse.urlencode({k: v for k, v in given.items() if v})
    return _page("activity.html", title="Activity", account=session.account, csrf=session.csrf, rows=rows, given=given,
                 statuses=sorted(STATUSES), query=query)


@router.get("/activity/rows")
async def activity_rows(request: Request) -> Response:
    """The activity table's rows, for the page's live updates."""
    session = await _signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    rows = await _rows(_svc(request), session.account_id, _search(request)[0])
    return _page("activity_rows.html", rows=rows)


@router.get("/activity/stream")
async def activity_stream(request: Request) -> Response:
    """Server-sent events: `changed` whenever the account's newest message or event changes
    (checked every LIVE_EVERY seconds); the stream ends after LIVE_FOR seconds and the
    browser's EventSource opens a new one."""
    svc = _svc(request)
    session = await _signed_in(request, page=False)
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


async def _rows(svc: WebServices, account_id: int, search: Search) -> list[dict[str, Any]]:
    rows = await asyncio.get_running_loop().run_in_executor(
        svc.executor, search_messages, svc.engine, account_id, search, ACTIVITY_ROWS)
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


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


@router.get("/messages/{queue_id}")
async def message(request: Request, queue_id: str) -> Response:
    svc = _svc(request)
    session = await _signed_in(request)
    if isinstance(session, Response):
        return session
    name = session.account
    found = None
    if QUEUE_ID.fullmatch(queue_id):
        found = await asyncio.get_running_loop().run_in_executor(svc.executor, QueueReader(svc.engine).show, queue_id)
    if found is None or found.account != name:  # another account's message is not there at all
        return _page("not_found.html", 404, title="Not found", account=name, csrf=session.csrf)
    now = time.time()
    return _page("message.html", title=f"Message {found.id}", account=name, csrf=session.csrf, m=found,
                 timeline=timeline(found), when=_when, waiting=lambda r: _waiting(r, now))


def _waiting(r: RecipientDetail, now: float) -> str:
    return why_waiting(r, now) if r.status in PENDING else ""
