"""The account's suppression lists (/suppressions): one of SendGrid's five lists at a time,
searched by address, paged; an address taken off a list, or added to the global unsubscribes
(the one list the API adds to by hand).

The same service as the API's /v3/suppression and /v3/asm/suppressions/global
(accounts.suppressions), by the signed-in account's id: another account's addresses are simply
not there, and each removal or addition writes its event as the API's does.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailrelay.accounts.service import AccountError
from mailrelay.accounts.suppressions import KINDS, UNSUBSCRIBES, SuppressionService
from mailrelay.accounts.websessions import WebSession
from mailrelay.core.text import has_control_chars
from mailrelay.web.common import NOTICES, back, posted, run, services, signed_in, signed_in_page

PAGE = 50  # entries per page
MAX_PAGE = 10_000  # pages reachable by URL (offsets stay bounded)
LABELS = {"bounces": "Bounces", "blocks": "Blocks", "invalid_emails": "Invalid emails",
          "spam_reports": "Spam reports", UNSUBSCRIBES: "Global unsubscribes"}

router = APIRouter(include_in_schema=False)

NOTICES["suppression_removed"] = "The address was taken off the list: mail to it is sent again."
NOTICES["suppression_absent"] = "That address was not on the list."
NOTICES["suppression_added"] = "The address was added to the global unsubscribes: no mail goes to it."


def _service(request: Request) -> SuppressionService:
    return SuppressionService(services(request).engine)


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
        kinds=[(k, LABELS[k], _url(k)) for k in KINDS], q=q, entries=found[:PAGE], number=number,
        newer=_url(kind, q, number - 1) if number > 1 else "", older=_url(kind, q, number + 1) if more else "",
        can_add=kind == UNSUBSCRIBES, error=error, typed=typed, back_to=_url(kind, q, number))


@router.get("/suppressions")
async def suppressions(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    params = request.query_params
    kind = _kind(params.get("kind", ""))
    q = params.get("q", "").strip()[:320]
    if has_control_chars(q):
        q = ""
    try:
        number = min(max(int(params.get("page", "1")), 1), MAX_PAGE)
    except ValueError:
        number = 1
    return await _page(request, session, kind, q, number)


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
