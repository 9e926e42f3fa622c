"""Sign-in, sign-out, the start page and the static files.

Sign-in takes the account's name and password (argon2, as SMTP AUTH); failures count with failed
SMTP logins and API keys from the same address (accounts.lockout), with the same slow-down and
lock-out. A session is a random token in the cookie `mr_session` (HttpOnly, SameSite=Strict,
Secure over TLS) and a row of web_sessions (accounts.websessions); every form carries the
session's CSRF token, and the sign-in form a token of its own, bound to a cookie (the browser
has no session yet).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from mailrelay.smtp.limits import client_key
from mailrelay.web.common import HERE, SESSION_COOKIE, form, page, posted, run, same, services, session_of, set_cookie

LOGIN_COOKIE = "mr_signin"  # binds the sign-in form's CSRF token to this browser
STATIC_NAME = re.compile(r"[a-z0-9-]+\.(css|js|svg)")
STATIC_TYPES = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}
STATIC_FILES = frozenset(p.name for p in (HERE / "static").iterdir() if STATIC_NAME.fullmatch(p.name))

router = APIRouter(include_in_schema=False)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The dashboard's own files (vendored: no CDN), by a name known at start-up."""
    if name not in STATIC_FILES:
        return Response(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC_TYPES[name.rsplit(".", 1)[1]],
                        headers={"Cache-Control": "max-age=300"})


@router.get("/")
async def home(request: Request) -> Response:
    signed_in = await session_of(request)
    return RedirectResponse("/activity" if signed_in else "/login", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await session_of(request) is not None:
        return RedirectResponse("/activity", status_code=303)
    token = secrets.token_urlsafe(24)
    response = page("login.html", title="Sign in", csrf=token, name="", error=None, account=None)
    set_cookie(response, services(request), LOGIN_COOKIE, token, 3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    svc = services(request)
    fields = await form(request)
    token = request.cookies.get(LOGIN_COOKIE, "")
    name = fields.get("name", "")[:255]
    if not same(token, fields.get("csrf", "")):
        return page("login.html", 403, title="Sign in", csrf=token, name=name, account=None,
                    error="The form was too old or came from elsewhere; please sign in again.")
    where = client_key(request.client.host if request.client else "unknown")
    if svc.lockout.locked(where):
        return page("login.html", 429, title="Sign in", csrf=token, name=name, account=None,
                    error="Too many failed sign-ins from your address; try again later.")
    account = await run(request, svc.accounts.authenticate, name, fields.get("password", ""))
    if account is None or name == "apikey":
        delay = svc.lockout.record_failure(where)
        if delay:
            await asyncio.sleep(delay)
        return page("login.html", 401, title="Sign in", csrf=token, name=name, account=None,
                    error="The account name or the password is wrong.")
    session_token, session = await run(request, svc.sessions.create, account.id, time.time())
    response = RedirectResponse("/activity", status_code=303)
    set_cookie(response, svc, SESSION_COOKIE, session_token, int(session.expires_at - time.time()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    got = await posted(request)
    if isinstance(got, Response):
        return got
    await run(request, services(request).sessions.end, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response



