"""The dashboard's operator pages: every account, the queue by state and by domain and age
(Postfix's qshape) with bulk retry / bounce for a domain, the nodes, any account's message.

Security: only a session whose account is an operator (`mailrelay operator grant NAME`, read
from the database at every request) gets these pages; any other session gets the 404 of an
unknown page, for GET and POST alike and before the form is read, so an account learns nothing
of them. Every change is a POST with the session's CSRF token; the bulk actions show what they
will touch and ask again first. The pages call what the CLI and /admin/v1 call (AccountService,
quota.plans, delivery.operator, spool.reader, spool.nodes): no second code path for policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailrelay.accounts.passwords import generate_password
from mailrelay.accounts.service import AccountError, validate_name, validate_password, validate_plan
from mailrelay.accounts.websessions import WebSession
from mailrelay.core.dates import format_age
from mailrelay.core.status import DEFERRED, OUTBOUND, PENDING, QUEUED
from mailrelay.core.text import has_control_chars
from mailrelay.delivery import operator as queue_ops
from mailrelay.quota.plans import Plans, set_plan
from mailrelay.quota.usage import counts_today
from mailrelay.spool.nodes import NodeInfo, by_host, listing, node_state
from mailrelay.spool.reader import SHAPE_BUCKETS, DomainSummary, QueueReader, RecipientDetail, why_waiting
from mailrelay.web import common
from mailrelay.web.activity import find_message, timeline
from mailrelay.web.common import back, form, not_found, run, same, services, signed_in, signed_in_page

router = APIRouter(include_in_schema=False)

SHAPE_ROWS = 100  # domains in the qshape table, most recipients first
STATES = {"pending": PENDING, QUEUED: (QUEUED,), DEFERRED: (DEFERRED,)}  # the qshape table's choices

common.NOTICES.update({
    "op-created": "The account was created.",
    "op-disabled": "The account is disabled: its logins, keys and dashboard sessions no longer work.",
    "op-enabled": "The account is active again.",
    "op-plan": "The account's plan was changed.",
    "op-sandbox-on": "The account's mail is now captured in its sandbox, never delivered.",
    "op-sandbox-off": "The account's mail is delivered again.",
    "op-retried": "The domain's waiting recipients are due now: delivery takes them at its next look.",
    "op-bounced": "The domain's waiting recipients were bounced; each sender that asked for one gets a DSN.",
    "op-nothing": "Nothing was waiting for that domain.",
})


async def _operator(request: Request) -> WebSession | Response:
    """The operator's session; a visitor is sent to sign in, any other account gets a 404."""
    session = await signed_in(request)
    if isinstance(session, Response) or session.operator:
        return session
    return not_found(request, session, "page")


async def _posted(request: Request) -> tuple[WebSession, dict[str, str]] | Response:
    """common.posted, but a non-operator gets the 404 before its form is even looked at."""
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    fields = await form(request)
    if not same(session.csrf, fields.get("csrf", "")):
        return HTMLResponse("The form was too old or came from elsewhere; reload the page and try again.",
                            status_code=403)
    return session, fields


def _name(fields: dict[str, str]) -> str:
    """An account name from a form, or "" for one that could name nothing."""
    name = fields.get("name", "")
    return name if 0 < len(name) <= 64 and not has_control_chars(name) else ""


# -- overview -----------------------------------------------------------------------------------

@router.get("/operator")
async def overview(request: Request) -> Response:
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    svc = services(request)
    states = await run(request, QueueReader(svc.engine).by_state)
    accounts = await run(request, svc.accounts.list)
    nodes = await _nodes(request)
    return signed_in_page(request, session, "operator.html", title="Operator", states=_states(states),
                          accounts=len(accounts), disabled=sum(1 for a in accounts if a.status != "active"),
                          up=sum(1 for n in nodes if n.up), nodes=len(nodes))


@router.get("/operator/messages")
async def open_message(request: Request) -> Response:
    """The overview's "open a message" form: to the message's page by its queue id."""
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    queue_id = request.query_params.get("id", "").strip().upper()[:40]
    return back(f"/operator/messages/{queue_id}" if queue_id.isalnum() else "/operator/messages/-")


@router.get("/operator/messages/{queue_id}")
async def message(request: Request, queue_id: str) -> Response:
    """Any account's message, as its account sees it (and whose it is)."""
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    found = await find_message(request, queue_id, None)
    if found is None:
        return signed_in_page(request, session, "not_found.html", 404, title="Not found", what="message",
                              anywhere=True)
    now = time.time()

    def waiting(r: RecipientDetail) -> str:
        return why_waiting(r, now) if r.status in PENDING else ""

    return signed_in_page(request, session, "message.html", title=f"Message {found.id}", m=found,
                          timeline=timeline(found), waiting=waiting, show_account=True)


def _states(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Recipients per status, in the order of core.status.OUTBOUND, then any other."""
    known = [(s, counts.get(s, 0)) for s in OUTBOUND]
    return known + sorted((s, n) for s, n in counts.items() if s not in OUTBOUND)


# -- accounts -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AccountRow:
    name: str
    plan: str
    status: str
    sandbox: bool
    operator: bool
    today: int
    daily_limit: int  # 0: none


def _account_rows(request: Request) -> list[AccountRow]:
    svc = services(request)
    s = svc.settings
    plans = Plans(s.plans, s.accounts.default_plan)
    now = time.time()
    with svc.engine.connect() as conn:
        today = counts_today(conn, now)
    return [AccountRow(a.name, a.plan, a.status, a.sandbox, a.operator, today.get(a.id, 0),
                       plans.get(a.plan).daily_limit) for a in svc.accounts.list()]


async def _accounts_page(request: Request, session: WebSession, status: int = 200, **values: Any) -> Response:
    svc = services(request)
    rows = await run(request, _account_rows, request)
    return signed_in_page(request, session, "operator_accounts.html", status, title="Accounts", rows=rows,
                          plans=[p.name for p in svc.settings.plans], default_plan=svc.settings.accounts.default_plan,
                          **values)


@router.get("/operator/accounts")
async def accounts(request: Request) -> Response:
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    return await _accounts_page(request, session)


@router.post("/operator/accounts/create")
async def create_account(request: Request) -> Response:
    """As `mailrelay account create` and POST /admin/v1/accounts: a password left empty is
    generated and shown once, on the answer to this POST."""
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    session, fields = done
    svc = services(request)
    name, typed = fields.get("name", "").strip(), fields.get("password", "")
    password = typed or generate_password()
    try:
        validate_name(name)
        plan = validate_plan(fields.get("plan") or svc.settings.accounts.default_plan,
                             (p.name for p in svc.settings.plans))
        validate_password(password)
        await run(request, lambda: svc.accounts.create(name, password, plan=plan,
                                                       sandbox=fields.get("sandbox") == "on"))
    except AccountError as exc:
        return await _accounts_page(request, session, 400, problem=str(exc), given=fields)
    if typed:
        return back("/operator/accounts", "op-created")
    return await _accounts_page(request, session, created=name, password=password)


@router.post("/operator/accounts/status")
async def account_status(request: Request) -> Response:
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    session, fields = done
    name, status = _name(fields), fields.get("status", "")
    if status not in ("active", "disabled"):
        return await _accounts_page(request, session, 400, problem="Choose enable or disable.")
    if name == session.account and status == "disabled":
        return await _accounts_page(request, session, 400,
                                    problem="You cannot disable the account you are signed in with.")
    try:
        await run(request, services(request).accounts.set_status, name, status)
    except AccountError as exc:
        return await _accounts_page(request, session, 404, problem=str(exc))
    return back("/operator/accounts", "op-enabled" if status == "active" else "op-disabled")


@router.post("/operator/accounts/plan")
async def account_plan(request: Request) -> Response:
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    session, fields = done
    svc = services(request)
    name = _name(fields)
    try:
        plan = validate_plan(fields.get("plan", ""), (p.name for p in svc.settings.plans))
    except AccountError as exc:
        return await _accounts_page(request, session, 400, problem=str(exc))
    if await run(request, set_plan, svc.engine, name, plan, time.time()) is None:
        return await _accounts_page(request, session, 404, problem=f"no account named {name[:80]!r}")
    return back("/operator/accounts", "op-plan")


@router.post("/operator/accounts/sandbox")
async def account_sandbox(request: Request) -> Response:
    """As `mailrelay account sandbox on|off`: switching it on starts without chaos."""
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    session, fields = done
    on = fields.get("sandbox") == "on"
    try:
        await run(request, services(request).accounts.set_sandbox, _name(fields), on)
    except AccountError as exc:
        return await _accounts_page(request, session, 404, problem=str(exc))
    return back("/operator/accounts", "op-sandbox-on" if on else "op-sandbox-off")


# -- the queue ----------------------------------------------------------------------------------

@router.get("/operator/queue")
async def queue(request: Request) -> Response:
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    reader = QueueReader(services(request).engine)
    state = request.query_params.get("state", "")
    state = state if state in STATES else "pending"
    counts = await run(request, reader.by_state)
    total, rows = await run(request, lambda: reader.shape(time.time(), statuses=STATES[state], limit=SHAPE_ROWS))
    return signed_in_page(request, session, "operator_queue.html", title="Queue", states=_states(counts),
                          state=state, choices=list(STATES), total=total, rows=rows,
                          buckets=[str(b) for b in SHAPE_BUCKETS] + [f"{SHAPE_BUCKETS[-1]}+"],
                          more=len(rows) == SHAPE_ROWS)


ACTIONS = {"retry": "Retry now", "bounce": "Bounce"}


def _domain(text: str) -> str:
    """A destination domain as recipients.domain holds it (lower case), or "" for none."""
    text = text.strip().lower()
    return text if 0 < len(text) <= 255 and not has_control_chars(text) else ""


@router.get("/operator/queue/confirm")
async def confirm(request: Request) -> Response:
    """The step before a bulk action: what is waiting for the domain, and the form that acts."""
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    action = request.query_params.get("action", "")
    domain = _domain(request.query_params.get("domain", ""))
    if action not in ACTIONS or not domain:
        return not_found(request, session, "page")
    reader = QueueReader(services(request).engine)
    found: list[DomainSummary] = await run(request, lambda: reader.by_domain(1, domain=domain))
    return signed_in_page(request, session, "operator_confirm.html", title=f"{ACTIONS[action]}: {domain}",
                          action=action, label=ACTIONS[action], domain=domain,
                          summary=found[0] if found else None)


@router.post("/operator/queue/retry")
async def retry_domain(request: Request) -> Response:
    """Every queued and deferred recipient of the domain due now (`queue retry`, for a domain)."""
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    _, fields = done
    domain = _domain(fields.get("domain", ""))
    engine = services(request).engine

    def retry() -> int:
        with engine.begin() as conn:
            return queue_ops.retry(conn, None, now=time.time(), domain=domain)

    n = await run(request, retry) if domain else 0
    return back(f"/operator/queue?state={DEFERRED}", "op-retried" if n else "op-nothing")


@router.post("/operator/queue/bounce")
async def bounce_domain(request: Request) -> Response:
    """Every waiting recipient of the domain bounced (`queue bounce`, for a domain); those being
    delivered right now are left alone."""
    done = await _posted(request)
    if isinstance(done, Response):
        return done
    _, fields = done
    domain = _domain(fields.get("domain", ""))
    svc = services(request)
    if not domain:
        return back("/operator/queue", "op-nothing")
    result = await run(request, lambda: queue_ops.bounce_domain(svc.engine, domain, now=time.time(),
                                                                hostname=svc.settings.server.hostname))
    return back("/operator/queue", "op-bounced" if result.recipients else "op-nothing")


# -- nodes --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeRow:
    info: NodeInfo
    up: bool  # its heartbeat is younger than [delivery] dead_after, by this machine's clock
    silent: float  # seconds since its heartbeat


async def _nodes(request: Request) -> list[NodeRow]:
    svc = services(request)

    def read() -> list[NodeInfo]:
        with svc.engine.connect() as conn:
            return listing(conn)

    now, dead_after = time.time(), svc.settings.delivery.dead_after
    return [NodeRow(n, node_state(now - n.heartbeat_at, dead_after) == "alive", now - n.heartbeat_at)
            for n in await run(request, read)]


@router.get("/operator/nodes")
async def nodes(request: Request) -> Response:
    session = await _operator(request)
    if isinstance(session, Response):
        return session
    rows = await _nodes(request)
    dead_after = services(request).settings.delivery.dead_after
    return signed_in_page(request, session, "operator_nodes.html", title="Nodes", rows=rows,
                          hosts=by_host([r.info for r in rows], time.time(), dead_after), dead_after=dead_after,
                          ago=_ago)


def _ago(seconds: float) -> str:
    return f"{format_age(max(0.0, seconds))} ago"

