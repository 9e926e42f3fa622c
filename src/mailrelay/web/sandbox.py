"""The sandbox inbox: the account's captured mail (live), each message's HTML, text, headers,
source, attachments, link check and HTML summary; release, clear and the chaos settings.

The same services as `mailrelay inbox` and `mailrelay account sandbox` (sandbox.inbox,
sandbox.chaos, AccountService.set_sandbox), scoped to the signed-in account: another account's
message id is unknown here (404), like an id that does not exist.

Security: a message's HTML never enters a dashboard page. It is served alone by
`/sandbox/{id}/html` to an `<iframe sandbox="">` (no scripts, an opaque origin), under a CSP of
its own that allows no script and no remote load (images from the network only after "Show
remote images", and then nothing else), may be framed by this site only, and sandboxes the
document even when opened directly. Downloads are application/octet-stream, as attachments.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailrelay.sandbox import chaos
from mailrelay.sandbox.inbox import CapturedMessage, Inbox, InboxEntry, NoSuchCapture
from mailrelay.sandbox.preview import attachment_count, framed_html, part_at, preview
from mailrelay.store import bodies
from mailrelay.web import activity
from mailrelay.web.common import NOTICES, back, not_found, page, posted, run, services, signed_in, signed_in_page
from mailrelay.web.security import CSP

PAGE_ROWS = 50
RAW_SHOWN = 512 * 1024  # bytes of the source shown on the page; the download has all
MAX_PAGE = 100  # a search reads every page before the one shown: keep that bounded
QUEUE_ID = re.compile(r"[0-9A-Z]{16}")
# The page around the iframe: the dashboard's policy, and frames from this server only.
MESSAGE_PAGE_CSP = CSP + "; frame-src 'self'"
# The message's HTML alone: no script at all, inline styles, images only from the message itself
# (data:, cid:) unless the reader asked for remote ones; framed by this site only; `sandbox`
# makes it an opaque origin without scripts, forms or popups even when opened directly.
_FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:{remote}; font-src data:; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox")

NOTICES["sandbox-cleared"] = ("The sandbox inbox was cleared (a message still waiting for delivery to "
                              "another of its domains stays until it is captured too).")
NOTICES["sandbox-clear-unconfirmed"] = "Nothing was deleted: tick the box to confirm clearing the inbox."
NOTICES["sandbox-released"] = "Released from the sandbox: the message is queued for real delivery now."
NOTICES["sandbox-chaos-saved"] = "The chaos settings were saved; they apply to new SMTP logins."
NOTICES["sandbox-chaos-invalid"] = ("The chaos settings were not changed: a share is a number from 0 to 1, "
                                    "a code is 4xx or 5xx (not 421).")
NOTICES["sandbox-not-sandbox"] = ("This account is not a sandbox account: an operator turns sandbox mode on "
                                  "before chaos settings can be changed.")

router = APIRouter(include_in_schema=False)


def size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


def _paging(request: Request) -> tuple[str, int]:
    q = request.query_params.get("q", "").strip()[:200]
    try:
        number = int(request.query_params.get("page", "1"))
    except ValueError:
        number = 1
    return q, min(max(number, 1), MAX_PAGE)


def _listing(engine: sa.Engine, account: str, q: str, number: int) -> tuple[list[dict[str, Any]], bool]:
    """Page `number` of the account's captures matching `q`, and whether there are older ones."""
    offset = (number - 1) * PAGE_ROWS
    entries = Inbox(engine).list(account=account, search=q or None, limit=offset + PAGE_ROWS + 1)
    shown = entries[offset:offset + PAGE_ROWS]
    return _rows(engine, shown), len(entries) > offset + PAGE_ROWS


def _rows(engine: sa.Engine, entries: Sequence[InboxEntry]) -> list[dict[str, Any]]:
    raws: dict[str, bytes] = {}
    if entries:
        with engine.connect() as conn:
            raws = {qid: content.data for qid, content in bodies.load(conn, [e.id for e in entries]).items()}
    return [{"e": e, "to": e.recipients[0] + (f" +{len(e.recipients) - 1}" if len(e.recipients) > 1 else "")
             if e.recipients else "-", "attachments": attachment_count(raws.get(e.id, b""))} for e in entries]


@router.get("/sandbox")
async def inbox(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    svc = services(request)
    q, number = _paging(request)
    account = await run(request, svc.accounts.get, session.account)
    rows, older = await run(request, _listing, svc.engine, session.account, q, number)
    total = await run(request, lambda: Inbox(svc.engine).count(account=session.account))
    failures = chaos.parse(account.chaos) if account is not None and account.chaos else {}
    return signed_in_page(request, session, "sandbox.html", title="Sandbox", rows=rows, q=q, number=number,
                          older=older, total=total, sandbox=bool(account and account.sandbox), failures=failures,
                          query=urllib.parse.urlencode({"q": q, "page": number}), size=size,
                          link=lambda n: "/sandbox?" + urllib.parse.urlencode({"q": q, "page": n} if q
                                                                              else {"page": n}))


@router.get("/sandbox/rows")
async def inbox_rows(request: Request) -> Response:
    """The inbox table's rows, for the page's live updates."""
    session = await signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    q, number = _paging(request)
    rows, _ = await run(request, _listing, services(request).engine, session.account, q, number)
    return page("sandbox_rows.html", rows=rows, size=size)


@router.get("/sandbox/stream")
async def inbox_stream(request: Request) -> Response:
    """Server-sent events: `changed` when the account's event log moves (a capture, a release and
    a clear each write events), as the activity page's stream."""
    return await activity.activity_stream(request)


@router.post("/sandbox/clear")
async def clear(request: Request) -> Response:
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    if fields.get("confirm") != "yes":
        return back("/sandbox", "sandbox-clear-unconfirmed")
    engine = services(request).engine
    await run(request, lambda: Inbox(engine).clear(account=session.account, now=time.time()))
    return back("/sandbox", "sandbox-cleared")


@router.post("/sandbox/chaos")
async def set_chaos(request: Request) -> Response:
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    svc = services(request)
    try:
        failures = _failures(fields)
    except (chaos.ChaosError, ValueError):
        return back("/sandbox", "sandbox-chaos-invalid")
    account = await run(request, svc.accounts.get, session.account)
    if account is None or not account.sandbox:
        return back("/sandbox", "sandbox-not-sandbox")
    await run(request, svc.accounts.set_sandbox, session.account, True, chaos.to_json(failures))
    return back("/sandbox", "sandbox-chaos-saved")


def _failures(fields: dict[str, str]) -> dict[chaos.Stage, chaos.Failure]:
    """The form's shares and codes; a stage with an empty or zero share has no chaos."""
    out: dict[chaos.Stage, chaos.Failure] = {}
    for stage in chaos.STAGES:
        share = fields.get(f"{stage}_fraction", "").strip()
        if not share or float(share) == 0.0:
            continue
        code = fields.get(f"{stage}_code", "").strip() or str(chaos.DEFAULT_CODE)
        out[stage] = chaos.Failure(chaos.validate_fraction(float(share)), chaos.validate_code(int(code)))
    return out


async def _captured(request: Request, account: str, queue_id: str) -> CapturedMessage | None:
    """The account's captured message `queue_id`, or None (unknown, malformed, another's)."""
    if not QUEUE_ID.fullmatch(queue_id):
        return None
    engine = services(request).engine
    try:
        return await run(request, lambda: Inbox(engine).get(queue_id, account=account))
    except NoSuchCapture:
        return None


@router.get("/sandbox/{queue_id}")
async def message(request: Request, queue_id: str) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    found = await _captured(request, session.account, queue_id)
    if found is None:
        return not_found(request, session)
    raw = found.raw
    shown = await run(request, preview, raw)
    images = request.query_params.get("images") == "1"
    response = signed_in_page(request, session, "sandbox_message.html", title=f"Sandbox message {found.entry.id}",
                              e=found.entry, p=shown, raw=raw[:RAW_SHOWN].decode("utf-8", "replace"), raw_size=len(raw),
                              raw_cut=len(raw) > RAW_SHOWN,
                              images=images, size=size)
    response.headers["Content-Security-Policy"] = MESSAGE_PAGE_CSP
    return response


@router.get("/sandbox/{queue_id}/html")
async def message_html(request: Request, queue_id: str) -> Response:
    """The HTML part alone, for the message page's sandboxed iframe."""
    session = await signed_in(request, page=False)
    if isinstance(session, Response):
        return session
    found = await _captured(request, session.account, queue_id)
    html = None if found is None else await run(request, framed_html, found.raw)
    if html is None:
        return Response(status_code=404)
    remote = " https: http:" if request.query_params.get("images") == "1" else ""
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": _FRAME_CSP.format(remote=remote), "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "no-store", "X-DNS-Prefetch-Control": "off"})


@router.get("/sandbox/{queue_id}/raw")
async def message_raw(request: Request, queue_id: str) -> Response:
    """The message as delivery would have sent it (signature included), as a download."""
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    found = await _captured(request, session.account, queue_id)
    if found is None:
        return not_found(request, session)
    return _download(found.raw, f"{found.entry.id}.eml")


@router.get("/sandbox/{queue_id}/parts/{index}")
async def message_part(request: Request, queue_id: str, index: str) -> Response:
    """One part's decoded content (an attachment or an inline image), as a download."""
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    found = await _captured(request, session.account, queue_id)
    got = None if found is None or not index.isdigit() or len(index) > 6 else await run(
        request, part_at, found.raw, int(index))
    if got is None:
        return not_found(request, session, "attachment")
    part, data = got
    return _download(data, part.filename or f"part-{part.index}")


def _download(data: bytes, filename: str) -> Response:
    """`data` as a file to save, never to show: a type no browser renders, no sniffing."""
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:100].lstrip(".") or "download"
    quoted = urllib.parse.quote(filename[:200], safe="")
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@router.post("/sandbox/{queue_id}/release")
async def release(request: Request, queue_id: str) -> Response:
    """Send the captured message for real, as `mailrelay inbox release` does."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, _ = got
    engine = services(request).engine
    if not QUEUE_ID.fullmatch(queue_id):
        return not_found(request, session)
    try:
        await run(request, lambda: Inbox(engine).release(queue_id, account=session.account, now=time.time()))
    except NoSuchCapture:
        return not_found(request, session)
    return back(f"/messages/{queue_id}", "sandbox-released")
