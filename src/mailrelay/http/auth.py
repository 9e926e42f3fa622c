"""Who is calling: `Authorization: Bearer <API key>`, checked as an SMTP `apikey` login is.

Security: a missing, malformed, unknown or revoked key gets SendGrid's 401 body and nothing
else (which of those it was is not said). Failed keys count per client address with the same
slow-down and lock-out as failed SMTP logins (auth.*): after `slowdown_after` failures each
answer is delayed, after `lockout_after` the address gets 429 until the lock-out ends. Keys are
never logged: only a key's id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from mailrelay.accounts.scopes import allows
from mailrelay.accounts.service import Account
from mailrelay.http.errors import BAD_KEY, FORBIDDEN, APIError
from mailrelay.http.services import Services
from mailrelay.smtp.limits import client_key

MAX_AUTHORIZATION = 1024  # characters of the header: a key is about 70
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Caller:
    account: Account
    scopes: frozenset[str] | None  # None: full access


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def caller(request: Request) -> Caller:
    """The account behind the request's key (a FastAPI dependency)."""
    accounts = services(request).accounts
    return Caller(*await bearer(request, accounts.authenticate_key, accounts.key_if_known))


async def bearer(request: Request, check: Callable[[str], T | None],
                 quick: Callable[[str], T | None] | None = None) -> T:
    """What `check` (run in the executor) finds for the request's Bearer key; else 401 with
    SendGrid's body, counted and slowed down per client address like a failed SMTP login.
    On SQLite `quick` is asked first, on the event loop: a key used a moment ago is known
    without the trip to a thread and back (0.2 ms of a 1 ms request)."""
    svc = services(request)
    where = client_key(client_ip(request))
    limiter = svc.auth_limiter
    if limiter.locked(where):
        raise APIError(429, "too many failed authentication attempts from your address; try again later",
                       headers={"Retry-After": str(int(svc.settings.auth.lockout_seconds))})
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if not header:
        raise APIError(401, "authorization required")
    found = None
    if scheme.lower() == "bearer" and key and len(header) <= MAX_AUTHORIZATION:
        if quick is not None and svc.engine.dialect.name == "sqlite":
            found = quick(key)
        if found is None:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(svc.executor, check, key)
    if found is None:
        delay = limiter.record_failure(where)
        if delay:
            await asyncio.sleep(delay)
        raise APIError(401, BAD_KEY)
    return found


def needs(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller, if its key has `scope` (else 403, as SendGrid answers)."""
    async def check(request: Request) -> Caller:
        who = await caller(request)
        if not allows(who.scopes, scope):
            raise APIError(403, FORBIDDEN)
        return who
    return check
