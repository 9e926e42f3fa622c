"""`/admin/v1`: the operator's API (ours, not SendGrid's): accounts, plans, the queue, nodes.

Each endpoint does what a CLI command does, through the same services and with the same rules
and error texts (`account create | disable | enable | plan | sandbox | usage`, `queue list | show
| retry | bounce | delete`, `node list`), answered as JSON; errors keep SendGrid's shape.

Security: only an operator key (`mailrelay operator key create`, mailrelay.accounts.operators)
is let in; an account key gets the 401 a bad key gets, whatever its scopes, and an operator key
is not an account key anywhere else. Failed keys count toward the same per-address lock-out as
failed SMTP logins. Handlers are plain functions: FastAPI runs them in its thread pool, so their
database work never blocks the event loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from mailrelay.accounts.operators import OperatorKey
from mailrelay.accounts.passwords import generate_password
from mailrelay.accounts.service import (
    STATUSES,
    Account,
    AccountError,
    validate_name,
    validate_password,
    validate_plan,
)
from mailrelay.core.status import OUTBOUND, PENDING
from mailrelay.core.text import has_control_chars
from mailrelay.delivery import operator as queue_ops
from mailrelay.http.auth import bearer, services
from mailrelay.http.errors import ERRORS_CONTENT, APIError, Problem
from mailrelay.http.services import Services
from mailrelay.quota.plans import Plans, set_plan, usage_json, usage_report
from mailrelay.spool.nodes import listing, node_json
from mailrelay.spool.reader import QueueReader, why_waiting
from mailrelay.store.db import check_row_limit


async def operator(request: Request) -> OperatorKey:
    """The operator key of the request (a FastAPI dependency); 401 for anything else."""
    return await bearer(request, services(request).operator_keys.authenticate)


router = APIRouter(prefix="/admin/v1", tags=["operator (mailrelay)"], dependencies=[Depends(operator)])
_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no such account or message",
                                                   "content": ERRORS_CONTENT}}
_TAKEN: dict[int | str, dict[str, Any]] = {409: {"description": "the name is taken", "content": ERRORS_CONTENT}}
Svc = Annotated[Services, Depends(services)]


def _storable(text: str) -> bool:
    """Could be a stored name or queue id: anything else (a NUL, which PostgreSQL refuses in
    text, a megabyte) names nothing, and is answered 404 without asking the database."""
    return len(text) <= 255 and not has_control_chars(text)


def _account(svc: Services, name: str) -> Account:
    account = svc.accounts.get(name) if _storable(name) else None
    if account is None:
        raise _no_account(name)
    return account


def _no_account(name: str) -> APIError:
    return APIError(404, f"no account named {name[:80]!r}")


def _bad(field: str, exc: Exception) -> APIError:
    return APIError(400, [Problem(str(exc), field)])


def _account_json(a: Account, keys: int) -> dict[str, Any]:
    return {"name": a.name, "plan": a.plan, "status": a.status, "sandbox": a.sandbox, "keys": keys,
            "created_at": a.created_at}


def _key_count(svc: Services, name: str) -> int:
    return sum(1 for k in svc.accounts.list_keys(name) if k.active)


def _plan(svc: Services, name: str) -> str:
    """A plan of the config ([plans.NAME]); 400 with `account plan`'s text otherwise."""
    try:
        return validate_plan(name, (p.name for p in svc.settings.plans))
    except AccountError as exc:
        raise _bad("plan", exc) from None


# -- accounts ---------------------------------------------------------------------------------

class NewAccount(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    password: str | None = None  # none: one is generated and answered once
    plan: str | None = None  # none: [accounts] default_plan
    sandbox: bool = False


class AccountChange(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: str | None = None  # active | disabled
    plan: str | None = None
    sandbox: bool | None = None  # switching it on starts without chaos, as `account sandbox on`


@router.get("/accounts", summary="List accounts (account list)")
def list_accounts(svc: Svc) -> list[dict[str, Any]]:
    keys = Counter(k.account_name for k in svc.accounts.list_keys() if k.active)
    return [_account_json(a, keys[a.name]) for a in svc.accounts.list()]


@router.post("/accounts", status_code=201, responses=_TAKEN, summary="Create an account (account create)")
def create_account(svc: Svc, body: NewAccount) -> dict[str, Any]:
    try:
        validate_name(body.name)
    except AccountError as exc:
        raise _bad("name", exc) from None
    plan = _plan(svc, body.plan or svc.settings.accounts.default_plan)
    password = body.password if body.password is not None else generate_password()
    try:
        validate_password(password)
    except AccountError as exc:
        raise _bad("password", exc) from None
    if svc.accounts.get(body.name) is not None:
        raise APIError(409, [Problem(f"account {body.name!r} already exists", "name")])
    try:
        account = svc.accounts.create(body.name, password, plan=plan, sandbox=body.sandbox)
    except AccountError as exc:  # created by someone else in between
        raise APIError(409, [Problem(str(exc), "name")]) from None
    out = _account_json(account, 0)
    if body.password is None:
        out["password"] = password  # shown once, as the CLI prints a generated one
    return out


@router.get("/accounts/{name}", responses=_MISSING, summary="One account")
def get_account(svc: Svc, name: str) -> dict[str, Any]:
    return _account_json(_account(svc, name), _key_count(svc, name))


@router.patch("/accounts/{name}", responses=_MISSING, summary="Disable or enable, change plan, sandbox on or off")
def change_account(svc: Svc, name: str, body: AccountChange) -> dict[str, Any]:
    account = _account(svc, name)
    # Everything is checked before anything changes.
    if body.status is not None and body.status not in STATUSES:
        raise APIError(400, [Problem(f"unknown status {body.status[:40]!r}: expected one of "
                                     f"{', '.join(STATUSES)}", "status")])
    plan = _plan(svc, body.plan) if body.plan is not None else None
    try:
        if body.status is not None and body.status != account.status:
            svc.accounts.set_status(name, "active" if body.status == "active" else "disabled")
        if plan is not None and set_plan(svc.engine, name, plan, time.time()) is None:
            raise _no_account(name)
        if body.sandbox is not None and body.sandbox != account.sandbox:
            svc.accounts.set_sandbox(name, body.sandbox)
    except AccountError:  # removed meanwhile
        raise _no_account(name) from None
    return get_account(svc, name)


@router.get("/accounts/{name}/usage", responses=_MISSING, summary="Emails sent today and this month (account usage)")
def account_usage(svc: Svc, name: str) -> dict[str, Any]:
    s = svc.settings
    _account(svc, name)
    report = usage_report(svc.engine, name, Plans(s.plans, s.accounts.default_plan), time.time())
    if report is None:
        raise _no_account(name)
    return usage_json(report, s.smtp)


@router.get("/plans", summary="The configured plans ([plans.NAME])")
def list_plans(svc: Svc) -> list[dict[str, Any]]:
    default = svc.settings.accounts.default_plan
    return [dataclasses.asdict(p) | {"default": p.name == default} for p in svc.settings.plans]


# -- the queue --------------------------------------------------------------------------------

def _limit(value: int) -> int:
    try:
        return check_row_limit(value)
    except ValueError as exc:
        raise _bad("limit", exc) from None


@router.get("/queue", summary="Messages, newest first (queue list)")
def list_queue(svc: Svc, state: Annotated[str | None, Query(max_length=16)] = None,
               limit: Annotated[int, Query()] = 100) -> dict[str, Any]:
    if state is not None and state not in OUTBOUND:
        raise APIError(400, [Problem(f"invalid choice: {state!r} (choose from {', '.join(OUTBOUND)})", "state")])
    reader = QueueReader(svc.engine)
    entries = reader.list(limit=_limit(limit), status=state)
    return {"messages": [dataclasses.asdict(e) for e in entries], "total": reader.count(status=state)}


@router.get("/queue/summary", summary="Waiting recipients per destination domain")
def queue_summary(svc: Svc, limit: Annotated[int, Query()] = 100) -> list[dict[str, Any]]:
    return [dataclasses.asdict(d) for d in QueueReader(svc.engine).by_domain(limit=_limit(limit))]


@router.get("/queue/{queue_id}", responses=_MISSING,
            summary="One message with attempts, events and why it waits (queue show)")
def show_message(svc: Svc, queue_id: str) -> dict[str, Any]:
    detail = QueueReader(svc.engine).show(queue_id) if _storable(queue_id) else None
    if detail is None:
        raise APIError(404, f"no message with queue id {queue_id[:40]!r}")
    now = time.time()
    out = dataclasses.asdict(detail)
    for doc, r in zip(out["recipients"], detail.recipients, strict=True):
        doc["waiting"] = why_waiting(r, now) if r.status in PENDING else None
    return out


def _missing(exc: queue_ops.NoSuchMessage) -> APIError:
    return APIError(404, str(exc))


def _queued(queue_id: str) -> str:
    if not _storable(queue_id):
        raise _missing(queue_ops.NoSuchMessage(queue_id))
    return queue_id


@router.post("/queue/{queue_id}/retry", responses=_MISSING,
             summary="Make its queued and deferred recipients due now (queue retry)")
def retry_message(svc: Svc, queue_id: str) -> dict[str, Any]:
    return _recipients_changed(svc, queue_id, queue_ops.retry)


@router.post("/queue/{queue_id}/bounce", responses=_MISSING,
             summary="Bounce its pending recipients; the sender gets a DSN (queue bounce)")
def bounce_message(svc: Svc, queue_id: str) -> dict[str, Any]:
    try:
        done = queue_ops.bounce_message(svc.engine, _queued(queue_id), now=time.time(),
                                        hostname=svc.settings.server.hostname)
    except queue_ops.NoSuchMessage as exc:
        raise _missing(exc) from None
    return dataclasses.asdict(done)


@router.delete("/queue/{queue_id}", responses=_MISSING, summary="Remove it from the queue, undelivered (queue delete)")
def delete_message(svc: Svc, queue_id: str) -> dict[str, Any]:
    return _recipients_changed(svc, queue_id, queue_ops.delete)


def _recipients_changed(svc: Svc, queue_id: str, op: Callable[..., int]) -> dict[str, Any]:
    """Run a queue operation on one message in its own transaction: how many recipients it
    changed, or 404 for an unknown id (as the CLI's `queue retry|delete`)."""
    try:
        with svc.engine.begin() as conn:
            n = op(conn, _queued(queue_id), now=time.time())
    except queue_ops.NoSuchMessage as exc:
        raise _missing(exc) from None
    return {"id": queue_id, "recipients": n}


@router.get("/nodes", summary="The delivering processes sharing the database (node list)")
def list_nodes(svc: Svc) -> list[dict[str, Any]]:
    with svc.engine.connect() as conn:
        found = listing(conn)
    now = time.time()
    return [node_json(n, now, svc.settings.delivery.dead_after) for n in found]
