"""SendGrid's suppression endpoints over the account's suppression lists and unsubscribe groups.

`/v3/suppression/<list>` reads and clears one of SendGrid's five lists (accounts.suppressions
keeps the list as `kind`); `/v3/asm/suppressions/global` adds to and reads the global
unsubscribes; `/v3/asm/groups` are the unsubscribe groups (accounts.asm). Every address on any
list is dropped at delivery. Everything is looked up with the caller's account id: another
account's group id is 404, its addresses are simply not there. Handlers are plain `def`, so
FastAPI runs their database work in its thread pool, off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from mailrelay.accounts.asm import Group, GroupError, GroupService
from mailrelay.accounts.scopes import SUPPRESSION_LISTS
from mailrelay.accounts.service import AccountError
from mailrelay.accounts.suppressions import Suppression, SuppressionService, normalize_address
from mailrelay.core.text import has_control_chars
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem

router = APIRouter()

MAX_EMAILS = 1000  # addresses per request body
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such group in the caller's account"}}
GroupIdValue = Annotated[int, Field(ge=1, le=2**31 - 1)]
GroupId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Email = Annotated[str, Path(max_length=320)]


def _suppressions(request: Request) -> SuppressionService:
    return SuppressionService(services(request).engine)  # stateless over the engine: cheap


def _groups(request: Request) -> GroupService:
    return GroupService(services(request).engine)


def _bad(exc: AccountError, field: str | None = None) -> APIError:
    return APIError(400, [Problem(str(exc), getattr(exc, "field", None) or field)])


# -- the five lists ----------------------------------------------------------------------------

class Bounce(BaseModel):
    created: int
    email: str
    reason: str
    status: str


class InvalidEmail(BaseModel):
    created: int
    email: str
    reason: str


class SpamReport(BaseModel):
    created: int
    email: str
    ip: str


class Unsubscribe(BaseModel):
    created: int
    email: str


ENTRY_MODELS: dict[str, type[BaseModel]] = {"bounces": Bounce, "blocks": Bounce, "invalid_emails": InvalidEmail,
                                            "spam_reports": SpamReport, "unsubscribes": Unsubscribe}


def entry(kind: str, s: Suppression) -> dict[str, Any]:
    """One entry in SendGrid's shape for list `kind`."""
    out: dict[str, Any] = {"created": int(s.created_at), "email": s.address}
    if kind in ("bounces", "blocks", "invalid_emails"):
        out["reason"] = s.reason
    if kind in ("bounces", "blocks"):
        found = _STATUS.search(s.reason)
        out["status"] = found.group(1) if found else ""
    if kind == "spam_reports":
        out["ip"] = ""  # we receive no feedback loop reports, so no reporting IP
    return out


class DeleteMany(BaseModel):
    delete_all: bool = False
    emails: list[Annotated[str, Field(max_length=320)]] | None = Field(None, max_length=MAX_EMAILS)


def _list_routes(kind: str) -> None:
    base = f"/v3/suppression/{kind}"
    model = ENTRY_MODELS[kind]
    # Defaults, not Annotated: the annotations are strings, resolved where `kind` is unknown.
    reader = Depends(needs(f"suppression.{kind}.read"))
    deleter = Depends(needs(f"suppression.{kind}.delete"))

    def list_entries(
        request: Request, who: Caller = reader,
        start_time: Annotated[int | None, Query(ge=0, le=2**40)] = None,
        end_time: Annotated[int | None, Query(ge=0, le=2**40)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 500, offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        email: Annotated[str | None, Query(max_length=320)] = None,
    ) -> list[dict[str, Any]]:
        if email is not None and has_control_chars(email):
            raise APIError(400, [Problem("email must not contain control characters", "email")])
        found = _suppressions(request).entries(who.account.id, kind, start=start_time, end=end_time,
                                               limit=limit, offset=offset, containing=email)
        return [entry(kind, s) for s in found]

    def get_entry(request: Request, email: Email, who: Caller = reader) -> list[dict[str, Any]]:
        try:
            found = _suppressions(request).entries(who.account.id, kind, address=email, limit=1)
        except AccountError as exc:
            raise _bad(exc, "email") from None
        return [entry(kind, s) for s in found]

    def delete_entry(request: Request, email: Email, who: Caller = deleter) -> Response:
        try:
            removed = _suppressions(request).remove_kind(who.account.id, kind, [email])
        except AccountError as exc:
            raise _bad(exc, "email") from None
        if not removed:  # as SendGrid answers for an address not on the list
            raise APIError(404, "not found")
        return Response(status_code=204)

    def delete_many(request: Request, who: Caller = deleter,
                    body: Annotated[DeleteMany | None, Body()] = None) -> Response:
        if body is None or (not body.delete_all and not body.emails):
            raise APIError(400, [Problem("give delete_all: true or a list of emails", "delete_all")])
        if body.delete_all and body.emails:
            raise APIError(400, [Problem("delete_all and emails cannot be used together", "delete_all")])
        try:
            _suppressions(request).remove_kind(who.account.id, kind, None if body.delete_all else body.emails)
        except AccountError as exc:
            raise _bad(exc, "emails") from None
        return Response(status_code=204)

    label = kind.replace("_", " ")
    router.add_api_route(base, list_entries, methods=["GET"], response_model=list[model], tags=["suppressions"],  # type: ignore[valid-type]
                         summary=f"List {label}", name=f"list_{kind}")
    router.add_api_route(base, delete_many, methods=["DELETE"], status_code=204, tags=["suppressions"],
                         summary=f"Delete {label}: all, or the given emails", name=f"delete_{kind}",
                         response_class=Response)
    router.add_api_route(f"{base}/{{email}}", get_entry, methods=["GET"], response_model=list[model],  # type: ignore[valid-type]
                         tags=["suppressions"], summary=f"Look up one address in {label}", name=f"get_{kind}")
    router.add_api_route(f"{base}/{{email}}", delete_entry, methods=["DELETE"], status_code=204, tags=["suppressions"],
                         summary=f"Take one address off {label}", name=f"delete_{kind}_email",
                         response_class=Response, responses={404: {"description": "the address is not on the list"}})


for _kind in SUPPRESSION_LISTS:
    _list_routes(_kind)


# -- global unsubscribes -----------------------------------------------------------------------

class RecipientEmails(BaseModel):
    recipient_emails: list[Annotated[str, Field(max_length=320)]] = Field(max_length=MAX_EMAILS)


class GlobalEntry(BaseModel):
    recipient_email: str | None = None


@router.post("/v3/asm/suppressions/global", status_code=201, response_model=RecipientEmails,
             tags=["unsubscribes"], summary="Add addresses to the global unsubscribes")
def add_global(request: Request, who: Annotated[Caller, Depends(needs("asm.suppressions.global.create"))],
               body: RecipientEmails) -> dict[str, list[str]]:
    try:
        added = _suppressions(request).unsubscribe(who.account.id, body.recipient_emails)
    except AccountError as exc:
        raise _bad(exc, "recipient_emails") from None
    return {"recipient_emails": added}


@router.get("/v3/asm/suppressions/global/{email}", response_model=GlobalEntry, response_model_exclude_none=True,
            tags=["unsubscribes"], summary="Whether an address is globally unsubscribed ({} if not)")
def get_global(request: Request, who: Annotated[Caller, Depends(needs("asm.suppressions.global.read"))],
               email: Email) -> dict[str, str]:
    try:
        found = _suppressions(request).entries(who.account.id, "unsubscribes", address=email, limit=1)
    except AccountError as exc:
        raise _bad(exc, "email") from None
    return {"recipient_email": found[0].address} if found else {}


@router.delete("/v3/asm/suppressions/global/{email}", status_code=204, response_class=Response,
               tags=["unsubscribes"], summary="Take an address off the global unsubscribes")
def delete_global(request: Request, who: Annotated[Caller, Depends(needs("asm.suppressions.global.delete"))],
                  email: Email) -> Response:
    try:  # 204 whether or not it was there, as SendGrid answers
        _suppressions(request).remove_kind(who.account.id, "unsubscribes", [email])
    except AccountError as exc:
        raise _bad(exc, "email") from None
    return Response(status_code=204)


# -- unsubscribe groups ------------------------------------------------------------------------

class GroupIn(BaseModel):
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=1000)
    is_default: bool | None = None


class GroupOut(BaseModel):
    id: int
    name: str
    description: str
    is_default: bool
    unsubscribes: int
    last_email_sent_at: int | None = None


def group_out(g: Group) -> dict[str, Any]:
    return {"id": g.id, "name": g.name, "description": g.description, "is_default": g.is_default,
            "unsubscribes": g.unsubscribes, "last_email_sent_at": None}


def _found(value: Any) -> Any:
    if value is None:
        raise APIError(404, "not found")
    return value


def _guard(op: Callable[[], Any]) -> Any:
    try:
        return op()
    except GroupError as exc:
        raise _bad(exc) from None
    except AccountError as exc:
        raise _bad(exc, "recipient_emails") from None


@router.post("/v3/asm/groups", status_code=201, response_model=GroupOut, tags=["unsubscribe groups"],
             summary="Create an unsubscribe group")
def create_group(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.create"))],
                 body: GroupIn) -> dict[str, Any]:
    g = _guard(lambda: _groups(request).create(who.account.id, body.name or "", body.description or "",
                                               bool(body.is_default)))
    return group_out(g)


@router.get("/v3/asm/groups", response_model=list[GroupOut], tags=["unsubscribe groups"],
            summary="List unsubscribe groups (only the given ids if any)")
def list_groups(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.read"))],
                ids: Annotated[list[GroupIdValue] | None, Query(alias="id", max_length=500)] = None,
                ) -> list[dict[str, Any]]:
    return [group_out(g) for g in _groups(request).groups(who.account.id, ids or ())]


@router.get("/v3/asm/groups/{group_id}",
            responses=_NOT_FOUND, response_model=GroupOut, tags=["unsubscribe groups"],
            summary="One unsubscribe group")
def get_group(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.read"))],
              group_id: GroupId) -> dict[str, Any]:
    return group_out(_found(_groups(request).group(who.account.id, group_id)))


@router.patch("/v3/asm/groups/{group_id}",
              responses=_NOT_FOUND, status_code=201, response_model=GroupOut,
              tags=["unsubscribe groups"], summary="Change an unsubscribe group (201, as SendGrid answers)")
def update_group(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.update"))],
                 group_id: GroupId, body: GroupIn) -> dict[str, Any]:
    g = _guard(lambda: _groups(request).update(who.account.id, group_id, name=body.name,
                                               description=body.description, is_default=body.is_default))
    return group_out(_found(g))


@router.delete("/v3/asm/groups/{group_id}",
               responses=_NOT_FOUND, status_code=204, response_class=Response,
               tags=["unsubscribe groups"], summary="Delete an unsubscribe group and its suppressions")
def delete_group(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.delete"))],
                 group_id: GroupId) -> Response:
    _found(_groups(request).delete(who.account.id, group_id) or None)
    return Response(status_code=204)


@router.get("/v3/asm/groups/{group_id}/suppressions",
            responses=_NOT_FOUND, response_model=list[str], tags=["unsubscribe groups"],
            summary="The addresses that left a group")
def list_group_suppressions(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.suppressions.read"))],
                            group_id: GroupId) -> list[str]:
    found: list[str] = _found(_groups(request).members(who.account.id, group_id))
    return found


@router.post("/v3/asm/groups/{group_id}/suppressions",
             responses=_NOT_FOUND, status_code=201, response_model=RecipientEmails,
             tags=["unsubscribe groups"], summary="Add addresses to a group's suppressions")
def add_group_suppressions(request: Request,
                           who: Annotated[Caller, Depends(needs("asm.groups.suppressions.create"))],
                           group_id: GroupId, body: RecipientEmails) -> dict[str, list[str]]:
    added = _found(_guard(lambda: _groups(request).add(who.account.id, group_id, body.recipient_emails)))
    return {"recipient_emails": added}


@router.delete("/v3/asm/groups/{group_id}/suppressions/{email}",
               responses=_NOT_FOUND, status_code=204, response_class=Response,
               tags=["unsubscribe groups"], summary="Take an address out of a group's suppressions")
def delete_group_suppression(request: Request,
                             who: Annotated[Caller, Depends(needs("asm.groups.suppressions.delete"))],
                             group_id: GroupId, email: Email) -> Response:
    _found(_guard(lambda: _groups(request).remove(who.account.id, group_id, email)))
    return Response(status_code=204)


@router.post("/v3/asm/groups/{group_id}/suppressions/search", response_model=list[str],
             responses=_NOT_FOUND, tags=["unsubscribe groups"],
             summary="Which of the given addresses left a group")
def search_group_suppressions(request: Request,
                              who: Annotated[Caller, Depends(needs("asm.groups.suppressions.read"))],
                              group_id: GroupId, body: RecipientEmails) -> list[str]:
    groups = _groups(request)
    _found(groups.group(who.account.id, group_id))
    wanted = _guard(lambda: [normalize_address(a) for a in body.recipient_emails])
    return sorted(groups.suppressed_in_group(who.account.id, group_id, wanted))


class GroupSuppression(BaseModel):
    email: str
    group_id: int
    group_name: str
    created_at: int


@router.get("/v3/asm/suppressions", response_model=list[GroupSuppression], tags=["unsubscribe groups"],
            summary="Every address that left one of the account's groups")
def list_all_group_suppressions(request: Request,
                                who: Annotated[Caller, Depends(needs("asm.groups.suppressions.read"))],
                                ) -> list[dict[str, Any]]:
    return [{"email": address, "group_id": g.id, "group_name": g.name, "created_at": int(left_at)}
            for address, left_at, g in _groups(request).all_suppressions(who.account.id)]


class Membership(BaseModel):
    id: int
    name: str
    description: str
    is_default: bool
    suppressed: bool


class Memberships(BaseModel):
    suppressions: list[Membership]


@router.get("/v3/asm/suppressions/{email}", response_model=Memberships, tags=["unsubscribe groups"],
            summary="Each group of the account, and whether an address left it")
def address_groups(request: Request, who: Annotated[Caller, Depends(needs("asm.groups.suppressions.read"))],
                   email: Email) -> dict[str, Any]:
    try:
        found = _groups(request).memberships(who.account.id, email)
    except AccountError as exc:
        raise _bad(exc, "email") from None
    return {"suppressions": [{"id": g.id, "name": g.name, "description": g.description,
                              "is_default": g.is_default, "suppressed": left} for g, left in found]}
