"""The account's suppression lists (/suppressions): one of SendGrid's five lists at a time,
searched by address, paged; an address taken off a list, or added to the global unsubscribes
(the one list the API adds to by hand). The unsubscribe groups (/suppressions/groups): each
group's addresses, searched and paged, one taken out or added.

The same services as the API's /v3/suppression, /v3/asm/suppressions/global and
/v3/asm/groups (accounts.suppressions, accounts.asm), by the signed-in account's id: another
account's addresses are simply not there, its group ids are the same 404 as unknown ones, and
each removal or addition writes its event as the API's does.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailrelay.accounts.asm import Group, GroupService
from mailrelay.accounts.service import AccountError
from mailrelay.accounts.suppressions import KINDS, UNSUBSCRIBES, SuppressionService
from mailrelay.accounts.websessions import WebSession
from mailrelay.core.text import has_control_chars
from mailrelay.web.common import NOTICES, back, not_found, posted, run, services, signed_in, signed_in_page

PAGE = 50  # entries per page
MAX_PAGE = 10_000  # pages reachable by URL (offsets stay bounded)
LABELS = {"bounces": "Bounces", "blocks": "Blocks", "invalid_emails": "Invalid emails",
          "spam_reports": "Spam reports", UNSUBSCRIBES: "Global unsubscribes"}

router = APIRouter(include_in_schema=False)

NOTICES["suppression_removed"] = "The address was taken off the list: mail to it is sent again."
NOTICES["suppression_absent"] = "That address was not on the list."
NOTICES["suppression_added"] = "The address was added to the global unsubscribes: no mail goes to it."
NOTICES["group_removed"] = "The address was taken out of the group: its mail is sent to it again."
NOTICES["group_absent"] = "That address was not in the group."
NOTICES["group_added"] = "The address was added to the group: the group's mail no longer goes to it."


def _service(request: Request) -> SuppressionService:
    return SuppressionService(services(request).engine)


def _tabs() -> list[tuple[str, str, str]]:
    return [*((k, LABELS[k], _url(k)) for k in KINDS), ("groups", "Unsubscribe groups", "/suppressions/groups")]


def _kind(value: str) -> str:
    return value if value in KINDS else KINDS[0]


def _url(kind: str, q: str = "", page: int = 1) -> str:
    query = {"kind": kind, **({"q": q} if q else {}), **({"page": str(page)} if page > 1 else {})}
    return "/suppressions?" + urllib.parse.urlencode(query)


async def _page(request: Request, session: WebSession, kind: str, q: str, number: int, *, status: int = 200,
                error: str = "", typed: str = "") -> Response:
    found = await run(request, lambda: _service(request).entries(
        session.account_id, kind, limit=PAGE + 1, offset=(number - 1) * PAGE, containing=q or None))
    more = len(found) > PAGE
    return signed_in_page(
        request, session, "suppressions.html", status, title=f"Suppressions: {LABELS[kind]}", kind=kind,
        kinds=_tabs(), q=q, entries=found[:PAGE], number=number,
        newer=_url(kind, q, number - 1) if number > 1 else "", older=_url(kind, q, number + 1) if more else "",
        can_add=kind == UNSUBSCRIBES, error=error, typed=typed, back_to=_url(kind, q, number))


@router.get("/suppressions")
async def suppressions(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    params = request.query_params
    kind = _kind(params.get("kind", ""))
    q = _search(params.get("q", ""))
    return await _page(request, session, kind, q, _number(params.get("page", "1")))


def _search(text: str) -> str:
    text = text.strip()[:320]
    return "" if has_control_chars(text) else text


def _number(text: str) -> int:
    try:
        return min(max(int(text), 1), MAX_PAGE)
    except ValueError:
        return 1


def _back_to(fields: dict[str, str], kind: str) -> str:
    """Where to go after an action: the page it was made on (only our own /suppressions URLs)."""
    given = fields.get("back", "")
    return given if given.startswith("/suppressions?") and "//" not in given else _url(kind)


@router.post("/suppressions/remove")
async def remove(request: Request) -> Response:
    """Take one address off one list (as DELETE /v3/suppression/<list>/<email>)."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    kind = _kind(fields.get("kind", ""))
    try:
        removed = await run(request, _service(request).remove_kind, session.account_id, kind,
                            [fields.get("email", "")])
    except AccountError as exc:
        return await _page(request, session, kind, "", 1, status=400, error=str(exc))
    return back(_back_to(fields, kind), "suppression_removed" if removed else "suppression_absent")


@router.post("/suppressions/add")
async def add(request: Request) -> Response:
    """Add one address to the global unsubscribes (as POST /v3/asm/suppressions/global)."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    email = fields.get("email", "")
    try:
        await run(request, _service(request).unsubscribe, session.account_id, [email])
    except AccountError as exc:
        return await _page(request, session, UNSUBSCRIBES, "", 1, status=400, error=str(exc), typed=email[:320])
    return back(_url(UNSUBSCRIBES), "suppression_added")


# -- unsubscribe groups ----------------------------------------------------------------------


def _groups(request: Request) -> GroupService:
    return GroupService(services(request).engine)


def _group_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 2**31 else None


def _group_url(group_id: int, q: str = "", page: int = 1) -> str:
    query = urllib.parse.urlencode({**({"q": q} if q else {}), **({"page": str(page)} if page > 1 else {})})
    return f"/suppressions/groups/{group_id}" + (f"?{query}" if query else "")


@router.get("/suppressions/groups")
async def groups(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    found = await run(request, _groups(request).groups, session.account_id)
    return signed_in_page(request, session, "suppression_groups.html", title="Suppressions: unsubscribe groups",
                          kind="groups", kinds=_tabs(), groups=found, group=None)


async def _group_page(request: Request, session: WebSession, group: Group, q: str, number: int, *,
                      status: int = 200, error: str = "", typed: str = "") -> Response:
    members = await run(request, _groups(request).members, session.account_id, group.id) or []
    if q:
        members = [m for m in members if q.lower() in m]
    shown = members[(number - 1) * PAGE:number * PAGE]
    return signed_in_page(
        request, session, "suppression_groups.html", status, title=f"Unsubscribe group {group.name}",
        kind="groups", kinds=_tabs(), group=group, members=shown, q=q, number=number, error=error, typed=typed,
        newer=_group_url(group.id, q, number - 1) if number > 1 else "",
        older=_group_url(group.id, q, number + 1) if len(members) > number * PAGE else "",
        back_to=_group_url(group.id, q, number))


@router.get("/suppressions/groups/{group_id}")
async def group_page(request: Request, group_id: str) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    number = _group_id(group_id)
    group = None if number is None else await run(request, _groups(request).group, session.account_id, number)
    if group is None:
        return not_found(request, session, "unsubscribe group")
    params = request.query_params
    return await _group_page(request, session, group, _search(params.get("q", "")), _number(params.get("page", "1")))


async def _posted_group(request: Request, group_id: str) -> tuple[WebSession, dict[str, str], Group] | Response:
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    number = _group_id(group_id)
    group = None if number is None else await run(request, _groups(request).group, session.account_id, number)
    if group is None:
        return not_found(request, session, "unsubscribe group")
    return session, fields, group


@router.post("/suppressions/groups/{group_id}/remove")
async def group_remove(request: Request, group_id: str) -> Response:
    """Take one address out of a group (as DELETE /v3/asm/groups/<id>/suppressions/<email>)."""
    got = await _posted_group(request, group_id)
    if isinstance(got, Response):
        return got
    session, fields, group = got
    try:
        gone = await run(request, _groups(request).remove, session.account_id, group.id, fields.get("email", ""))
    except AccountError as exc:
        return await _group_page(request, session, group, "", 1, status=400, error=str(exc))
    given = fields.get("back", "")
    here = _group_url(group.id)
    to = given if (given == here or given.startswith(here + "?")) and "//" not in given else here
    return back(to, "group_removed" if gone else "group_absent")


@router.post("/suppressions/groups/{group_id}/add")
async def group_add(request: Request, group_id: str) -> Response:
    """Add one address to a group (as POST /v3/asm/groups/<id>/suppressions)."""
    got = await _posted_group(request, group_id)
    if isinstance(got, Response):
        return got
    session, fields, group = got
    email = fields.get("email", "")
    try:
        await run(request, _groups(request).add, session.account_id, group.id, [email])
    except AccountError as exc:
        return await _group_page(request, session, group, "", 1, status=400, error=str(exc), typed=email[:320])
    return back(_group_url(group.id), "group_added")
