"""SendGrid's API key management: `/v3/scopes` and `/v3/api_keys`, over AccountService's keys.

Every key id is looked up with the caller's account id, so another account's key is a 404, the
same as a missing one. Keys revoked from the CLI are not shown (SendGrid has no revoked keys:
its delete is the revocation). A key can grant only scopes its creator holds: asking for more is
403, naming them, so a restricted key cannot mint a stronger one; a create without `scopes`
gets the caller's own (full access for a full-access caller, as SendGrid's default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mailrelay.accounts import scopes as scope_names
from mailrelay.accounts.service import (
    MAX_KEYS,
    MAX_LABEL,
    AccountError,
    AccountService,
    ApiKey,
    KeyNotFound,
    validate_scopes,
)
from mailrelay.http.auth import Caller, caller, needs, services
from mailrelay.http.errors import APIError, Problem

router = APIRouter(tags=["API Keys"])

MAX_SCOPES = 1000  # names in one request: every scope is far fewer

T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields ignored, as SendGrid does


class CreateKey(_Body):
    name: str = Field(min_length=1, max_length=MAX_LABEL)
    scopes: list[str] | None = Field(default=None, max_length=MAX_SCOPES)


class RenameKey(_Body):
    name: str = Field(min_length=1, max_length=MAX_LABEL)


class ReplaceKey(_Body):
    name: str = Field(min_length=1, max_length=MAX_LABEL)
    scopes: list[str] = Field(min_length=1, max_length=MAX_SCOPES)


class KeyName(BaseModel):
    api_key_id: str
    name: str


class KeyScopes(KeyName):
    scopes: list[str]


class CreatedKey(KeyScopes):
    api_key: str  # the full key: shown here once, never again


class KeyList(BaseModel):
    result: list[KeyName]


class KeyDetail(BaseModel):
    result: list[KeyScopes]


class ScopeList(BaseModel):
    scopes: list[str]


_Responses = dict[int | str, dict[str, Any]]
_AUTH: _Responses = {401: {"description": "bad or revoked key"}, 403: {"description": "the key lacks the scope"}}
_BAD: _Responses = {400: {"description": "invalid body or query, with the field"}}
_NOT_FOUND: _Responses = {404: {"description": "no such key of this account"}}
_REFUSED: _Responses = {403: {"description": "the key lacks the scope, a scope asked for is one the caller "
                                             "lacks, or the account has 100 keys"}}
_CHANGE: _Responses = {**_AUTH, **_BAD, **_REFUSED, **_NOT_FOUND}


def _scopes(chosen: tuple[str, ...] | frozenset[str] | None) -> list[str]:
    return sorted(scope_names.FULL_ACCESS if chosen is None else chosen)


def _detail(key: ApiKey) -> KeyScopes:
    return KeyScopes(api_key_id=key.id, name=key.label, scopes=_scopes(key.scopes))


async def _run(request: Request, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on the services' executor (database work and argon2 stay off the loop);
    KeyNotFound is 404, another AccountError 400 on `name` (the only field left to check)."""
    svc = services(request)
    try:
        return await asyncio.get_running_loop().run_in_executor(svc.executor, fn, *args)
    except KeyNotFound:
        raise APIError(404, "not found") from None
    except AccountError as exc:
        raise APIError(400, [Problem(str(exc), "name")]) from None


def _grantable(who: Caller, requested: list[str] | None) -> tuple[str, ...] | None:
    """The scopes a key made or changed by `who` gets: the requested ones if `who` holds each
    (400 for a name that is no scope, 403 for one `who` lacks); None asked for is `who`'s own."""
    if requested is None:
        return None if who.scopes is None else tuple(sorted(who.scopes))
    try:
        chosen = validate_scopes(requested)
    except AccountError as exc:
        raise APIError(400, [Problem(str(exc), "scopes")]) from None
    lacking = [s for s in (chosen or scope_names.FULL_ACCESS) if not scope_names.allows(who.scopes, s)]
    if lacking:
        named = ", ".join(sorted(lacking)[:10])
        why = f"a key cannot grant scopes its creator lacks: {named}"
        raise APIError(403, [Problem("access forbidden", "scopes", why)])
    return chosen


@router.get("/v3/scopes", response_model=ScopeList, responses={401: _AUTH[401]},
            summary="The scopes of the key making the call")
async def list_scopes(who: Annotated[Caller, Depends(caller)]) -> ScopeList:
    # No scope needed: SendGrid has none for reading a key's own scopes.
    return ScopeList(scopes=_scopes(who.scopes))


def _active_keys(accounts: AccountService, name: str) -> list[ApiKey]:
    return [k for k in accounts.list_keys(name) if k.active]


@router.get("/v3/api_keys", response_model=KeyList, responses={**_AUTH, **_BAD},
            summary="The account's API keys (names and ids)")
async def list_keys(request: Request, who: Annotated[Caller, Depends(needs("api_keys.read"))],
                    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None) -> KeyList:
    found = await _run(request, _active_keys, services(request).accounts, who.account.name)
    return KeyList(result=[KeyName(api_key_id=k.id, name=k.label) for k in found[:limit]])


@router.post("/v3/api_keys", status_code=201, response_model=CreatedKey, responses={**_AUTH, **_BAD, **_REFUSED},
             summary="Create an API key (the key itself is shown only in this answer)")
async def create_key(request: Request, body: CreateKey,
                     who: Annotated[Caller, Depends(needs("api_keys.create"))]) -> CreatedKey:
    chosen = _grantable(who, body.scopes)
    accounts = services(request).accounts
    if len(await _run(request, _active_keys, accounts, who.account.name)) >= MAX_KEYS:
        raise APIError(403, [Problem(f"too many API keys: at most {MAX_KEYS}; delete one first")])
    key, full = await _run(request, accounts.create_key, who.account.name, body.name, chosen)
    return CreatedKey(api_key=full, api_key_id=key.id, name=key.label, scopes=_scopes(key.scopes))


def _owned_active(accounts: AccountService, who: Caller, key_id: str) -> ApiKey:
    """The caller's account's unrevoked key `key_id` (blocking); KeyNotFound otherwise."""
    key = accounts.get_key(who.account.id, key_id)
    if not key.active:
        raise KeyNotFound(key_id)
    return key


@router.get("/v3/api_keys/{api_key_id}", response_model=KeyDetail, responses={**_AUTH, **_NOT_FOUND},
            summary="One API key: its name, id and scopes")
async def get_key(request: Request, api_key_id: str,
                  who: Annotated[Caller, Depends(needs("api_keys.read"))]) -> KeyDetail:
    key = await _run(request, _owned_active, services(request).accounts, who, api_key_id)
    return KeyDetail(result=[_detail(key)])


def _update(accounts: AccountService, who: Caller, key_id: str, name: str,
            scopes: tuple[str, ...] | None, set_scopes: bool) -> ApiKey:
    key = _owned_active(accounts, who, key_id)
    if set_scopes:
        # update_key takes None as "leave as is": full access is asked for by naming every scope.
        return accounts.update_key(who.account.id, key.id, name,
                                   scope_names.FULL_ACCESS if scopes is None else scopes)
    return accounts.update_key(who.account.id, key.id, name)


@router.patch("/v3/api_keys/{api_key_id}", response_model=KeyName, responses=_CHANGE,
              summary="Rename an API key")
async def rename_key(request: Request, api_key_id: str, body: RenameKey,
                     who: Annotated[Caller, Depends(needs("api_keys.update"))]) -> KeyName:
    key = await _run(request, _update, services(request).accounts, who, api_key_id, body.name, None, False)
    return KeyName(api_key_id=key.id, name=key.label)


@router.put("/v3/api_keys/{api_key_id}", response_model=KeyScopes, responses=_CHANGE,
            summary="Set an API key's name and scopes")
async def replace_key(request: Request, api_key_id: str, body: ReplaceKey,
                      who: Annotated[Caller, Depends(needs("api_keys.update"))]) -> KeyScopes:
    chosen = _grantable(who, body.scopes)
    key = await _run(request, _update, services(request).accounts, who, api_key_id, body.name, chosen, True)
    return _detail(key)


def _delete(accounts: AccountService, who: Caller, key_id: str) -> None:
    key = _owned_active(accounts, who, key_id)
    accounts.delete_key(who.account.id, key.id)


@router.delete("/v3/api_keys/{api_key_id}", status_code=204, response_class=Response,
               responses={**_AUTH, **_NOT_FOUND},
               summary="Delete an API key: its next use is refused 401")
async def delete_key(request: Request, api_key_id: str,
                     who: Annotated[Caller, Depends(needs("api_keys.delete"))]) -> Response:
    await _run(request, _delete, services(request).accounts, who, api_key_id)
    return Response(status_code=204)
