"""The account's API keys: list them (scopes, created, last used), create one, revoke one.

The same AccountService calls as the API's /v3/api_keys. A signed-in account holds full access,
so a key made here may have any scopes `GET /v3/scopes` offers such an account, or full access.
The new key's secret is in the answer to the create POST and nowhere else (not in a URL, not in
a redirect, not in a log); later pages show only its id. Revoking keeps the key's row (as
`mailrelay account key revoke` does) so the page can list it as revoked; its next use fails.

Security: handles a key secret once, in the page answering the POST (Cache-Control: no-store).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailrelay.accounts import scopes as scope_names
from mailrelay.accounts.service import MAX_KEYS, MAX_LABEL, AccountError, ApiKey, KeyNotFound
from mailrelay.accounts.websessions import WebSession
from mailrelay.web.common import NOTICES, back, not_found, posted, run, same, services, signed_in, signed_in_page
from mailrelay.web.services import WebServices

router = APIRouter(include_in_schema=False)

# The create form carries one field per chosen scope: more than common.form() takes.
MAX_CREATE_FORM = 16384
MAX_CREATE_FIELDS = len(scope_names.FULL_ACCESS) + 8

NOTICES["key-revoked"] = "The key was revoked: anything still using it is refused from now on."

ALL_SCOPES = sorted(scope_names.FULL_ACCESS)


def scope_groups() -> list[tuple[str, list[str]]]:
    """The scopes by family (`api_keys`, `suppression.bounces`, ...), for the form's fieldsets."""
    groups: dict[str, list[str]] = {}
    for scope in ALL_SCOPES:
        groups.setdefault(scope.rpartition(".")[0], []).append(scope)
    return sorted(groups.items())


def _list(svc: WebServices, account: str) -> tuple[list[ApiKey], list[ApiKey]]:
    found = svc.accounts.list_keys(account)
    return [k for k in found if k.active], sorted((k for k in found if not k.active),
                                                  key=lambda k: k.revoked_at or 0.0, reverse=True)


async def _page(request: Request, session: WebSession, *, status: int = 200, **values: Any) -> HTMLResponse:
    active, revoked = await run(request, _list, services(request), session.account)
    values.setdefault("given", {"name": "", "access": "full", "scopes": []})
    return signed_in_page(request, session, "keys.html", status, title="API keys", active=active,
                          revoked=revoked, groups=scope_groups(), max_label=MAX_LABEL, max_keys=MAX_KEYS,
                          **values)


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    return await _page(request, session)


async def _create_form(request: Request) -> dict[str, list[str]]:
    """The create form's fields, every value of each (one `scope` per box ticked)."""
    body = await request.body()
    if len(body) > MAX_CREATE_FORM:
        return {}
    try:
        return urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_CREATE_FIELDS)
    except ValueError:  # more fields than any honest form has
        return {}


def _create(svc: WebServices, account: str, name: str, chosen: list[str] | None) -> tuple[ApiKey, str] | str:
    """A new key (and its full text) for `account`, or why not (a sentence for the page)."""
    active = [k for k in svc.accounts.list_keys(account) if k.active]
    if len(active) >= MAX_KEYS:
        return f"This account has {MAX_KEYS} keys, the most it may have: revoke one first."
    try:
        return svc.accounts.create_key(account, name, chosen)
    except AccountError as exc:
        return str(exc)


@router.post("/keys")
async def create_key(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    fields = await _create_form(request)
    if not same(session.csrf, fields.get("csrf", [""])[0]):
        return HTMLResponse("The form was too old or came from elsewhere; reload the page and try again.",
                            status_code=403)
    name = fields.get("name", [""])[0].strip()
    access = fields.get("access", ["full"])[0]
    chosen = fields.get("scope", [])
    given = {"name": name, "access": "restricted" if access == "restricted" else "full", "scopes": chosen}
    error = ""
    if not name:
        error = "Give the key a name, to tell it from the others."
    elif len(name) > MAX_LABEL:
        error = f"The name is too long: at most {MAX_LABEL} characters."
    elif access == "restricted" and not chosen:
        error = "Choose at least one scope, or full access."
    if error:
        return await _page(request, session, status=400, error=error, given=given)
    made = await run(request, _create, services(request), session.account, name,
                     chosen if access == "restricted" else None)
    if isinstance(made, str):
        return await _page(request, session, status=400, error=made, given=given)
    key, secret = made
    return await _page(request, session, created=key, secret=secret)


async def _active_key(request: Request, session: WebSession, key_id: str) -> ApiKey | None:
    try:
        key = await run(request, services(request).accounts.get_key, session.account_id, key_id)
    except KeyNotFound:
        return None
    return key if key.active else None


@router.get("/keys/{key_id}/revoke")
async def confirm_revoke(request: Request, key_id: str) -> Response:
    """The question before revoking: the key named, and the button that does it."""
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    key = await _active_key(request, session, key_id)
    if key is None:
        return not_found(request, session, "API key")
    return signed_in_page(request, session, "keys_revoke.html", title="Revoke an API key", key=key)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    session, _ = answer
    if await _active_key(request, session, key_id) is None:
        return not_found(request, session, "API key")
    try:
        await run(request, services(request).accounts.revoke_key, key_id, session.account_id)
    except KeyNotFound:
        return not_found(request, session, "API key")
    return back("/keys", "key-revoked")
