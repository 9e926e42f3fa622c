"""What every page module shares: templates, the session check, forms and their CSRF token.

Every page reads only the signed-in account's data. Templates escape everything they print
(Jinja2 autoescape): message content is text here, never markup.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailrelay.accounts.websessions import WebSession
from mailrelay.web.services import WebServices

HERE = Path(__file__).parent
SESSION_COOKIE = "mr_session"
MAX_FORM = 4096  # bytes of a form body
MAX_FIELDS = 40

T = TypeVar("T")

templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))


def when(at: float | None) -> str:
    """A time as the pages show it (UTC)."""
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


templates.globals["when"] = when


def services(request: Request) -> WebServices:
    found: WebServices = request.app.state.web
    return found


async def run(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the executor: database reads and writes, argon2."""
    return await asyncio.get_running_loop().run_in_executor(services(request).executor, fn, *args)


def page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = templates.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def signed_in_page(request: Request, session: WebSession, template: str, status: int = 200,
                   **values: Any) -> HTMLResponse:
    """A page of the signed-in account: the header knows who it is and carries the CSRF token,
    and the notice the URL names is shown."""
    return page(template, status, account=session.account, csrf=session.csrf, notice=notice(request),
                path=request.url.path, operator=session.operator, **values)


def not_found(request: Request, session: WebSession, what: str = "message") -> HTMLResponse:
    """The same 404 for another account's object, an unknown id and a malformed one."""
    return signed_in_page(request, session, "not_found.html", 404, title="Not found", what=what)


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body (at most MAX_FORM bytes; more is an empty form), first values."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    return {k: v[0] for k, v in _parsed(body).items()}


async def form_lists(request: Request) -> dict[str, list[str]]:
    """As form(), every value of each field (check boxes, multiple selects)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    return _parsed(body)


def _parsed(body: bytes) -> dict[str, list[str]]:
    """The fields of a form body; more than MAX_FIELDS is an empty form (no CSRF token: 403)."""
    try:
        return urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
    except ValueError:
        return {}


async def session_of(request: Request) -> WebSession | None:
    svc = services(request)
    return await run(request, svc.sessions.get, request.cookies.get(SESSION_COOKIE, ""), time.time())


async def signed_in(request: Request, *, page: bool = True) -> WebSession | Response:
    """The request's session, or the answer for a visitor without one: a page sends them to
    sign in, a part of a page (rows, events) is 401."""
    found = await session_of(request)
    if found is not None:
        return found
    return RedirectResponse("/login", status_code=303) if page else Response(status_code=401)


def same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


async def posted(request: Request) -> tuple[WebSession, dict[str, str]] | Response:
    """A form posted by a signed-in browser with the session's CSRF token: the session and the
    form, or the answer (sign in; 403 for a missing or wrong token)."""
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    fields = await form(request)
    if not same(session.csrf, fields.get("csrf", "")):
        return HTMLResponse("The form was too old or came from elsewhere; reload the page and try again.",
                            status_code=403)
    return session, fields


# What a page says after an action, by code: the code travels in the URL (`?notice=`), the text
# never does, so a link made elsewhere cannot put words on our page. Modules add their own.
NOTICES: dict[str, str] = {}


async def posted_about(request: Request, find: Callable[[WebSession], Awaitable[T | None]],
                       what: str) -> tuple[WebSession, dict[str, str], T] | Response:
    """A form posted about one of the account's objects: the session, the form and the object
    `find` returns, or the answer (sign in, 403 without the token, the 404 for an object that is
    not the account's)."""
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    found = await find(session)
    if found is None:
        return not_found(request, session, what)
    return session, fields, found


def back(to: str, notice: str = "") -> RedirectResponse:
    """After a POST, back to a page (303, so a reload does not post again), with a notice code
    from NOTICES."""
    if notice:
        assert notice in NOTICES, notice
        to += ("&" if "?" in to else "?") + urllib.parse.urlencode({"notice": notice})
    return RedirectResponse(to, status_code=303)


def notice(request: Request) -> str:
    """The text of the notice the URL names, or ""."""
    return NOTICES.get(request.query_params.get("notice", ""), "")


def set_cookie(response: Response, svc: WebServices, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=svc.secure_cookies)
