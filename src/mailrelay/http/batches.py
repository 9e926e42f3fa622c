"""SendGrid's scheduled sends: batch ids (`/v3/mail/batch`) and pausing or cancelling a batch
(`/v3/user/scheduled_sends`), over the mail_batches table and spool.batches.

Mail sent with a `batch_id` must name a batch the account created (else 400 on `batch_id`).
Pausing holds the batch's recipients not yet attempted, resuming (DELETE of the pause) lets
them go at their scheduled time, cancelling drops them (status `dropped`, a "dropped" event
with reason "Cancelled batch"). Changes go through the node's spool writer, in one transaction
with the recipients they change. Another account's batch is 404 (400 where it is named in a
body), never its state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from mailrelay.core.ids import random_id
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem
from mailrelay.spool import batches
from mailrelay.store.schema import mail_batches
from mailrelay.submission.v3errors import MailSendError, field_error

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such batch (or pause or cancel) here"}}
router = APIRouter(tags=["scheduled sends"])

BATCH_UNKNOWN = "The batch_id is not a valid batch ID for your account."  # ours: SendGrid's text is not documented
MAX_BATCHES = 10_000  # per account: a batch row is small, but not free
_ID = r"^[A-Za-z0-9_-]+$"  # ours are letters and digits
BatchId = Annotated[str, Path(max_length=64, pattern=_ID)]
State = Literal["pause", "cancel"]
T = TypeVar("T")


def new_batch_id() -> str:
    return random_id(32)


def check_batch(engine: sa.Engine, account_id: int, batch_id: str) -> None:
    """For mail send: MailSendError on `batch_id` unless the account created that batch."""
    with engine.connect() as conn:
        found = conn.execute(sa.select(mail_batches.c.id).where(mail_batches.c.id == batch_id,
                                                               mail_batches.c.account_id == account_id)).first()
    if found is None:
        raise MailSendError([field_error(BATCH_UNKNOWN, "batch_id", "message.batch_id")])


async def _write(request: Request, op: Callable[[Connection], T]) -> T:
    return await services(request).submission.policy.writer.run(op)


async def _read(request: Request, op: Callable[[Connection], T]) -> T:
    svc = services(request)

    def run() -> T:
        with svc.engine.connect() as conn:
            return op(conn)
    return await asyncio.get_running_loop().run_in_executor(svc.executor, run)


def _status(conn: Connection, account_id: int, batch_id: str) -> tuple[bool, str | None]:
    row = conn.execute(sa.select(mail_batches.c.status).where(mail_batches.c.id == batch_id,
                                                              mail_batches.c.account_id == account_id)).first()
    return (False, None) if row is None else (True, row.status)


class BatchOut(BaseModel):
    batch_id: str


class ScheduledSend(BaseModel):
    batch_id: str
    status: State


class NewScheduledSend(BaseModel):
    batch_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    status: State


class StatusChange(BaseModel):
    status: State


@router.post("/v3/mail/batch", status_code=201, summary="Create a batch id")
async def create_batch(request: Request, who: Annotated[Caller, Depends(needs("mail.batch.create"))]) -> BatchOut:
    batch_id = new_batch_id()

    def op(conn: Connection) -> bool:
        count = conn.execute(sa.select(sa.func.count()).select_from(mail_batches)
                             .where(mail_batches.c.account_id == who.account.id)).scalar_one()
        if count >= MAX_BATCHES:
            return False
        at = time.time()
        conn.execute(mail_batches.insert().values(id=batch_id, account_id=who.account.id, status=None,
                                                  created_at=at, updated_at=at))
        return True
    if not await _write(request, op):
        raise APIError(400, f"an account can have at most {MAX_BATCHES} batches")
    return BatchOut(batch_id=batch_id)


@router.get("/v3/mail/batch/{batch_id}", responses=_NOT_FOUND, summary="Validate a batch id")
async def get_batch(request: Request, batch_id: BatchId,
                    who: Annotated[Caller, Depends(needs("mail.batch.read"))]) -> BatchOut:
    found, _ = await _read(request, lambda conn: _status(conn, who.account.id, batch_id))
    if not found:
        raise APIError(404, "not found")
    return BatchOut(batch_id=batch_id)


async def _set(request: Request, account_id: int, batch_id: str, state: str | None) -> bool:
    now = time.time()
    return await _write(request, lambda conn: batches.set_status(conn, account_id, batch_id, state, now))


@router.post("/v3/user/scheduled_sends", status_code=201, summary="Pause or cancel a batch")
async def create_scheduled_send(request: Request, body: NewScheduledSend,
                                who: Annotated[Caller, Depends(needs("user.scheduled_sends.create"))]
                                ) -> ScheduledSend:
    found, state = await _read(request, lambda conn: _status(conn, who.account.id, body.batch_id))
    if not found:
        raise APIError(400, [Problem(BATCH_UNKNOWN, "batch_id")])
    if state is not None:
        raise APIError(400, [Problem(f"the batch is already {'paused' if state == 'pause' else 'cancelled'}; "
                                     "PATCH or DELETE its scheduled send", "batch_id")])
    if not await _set(request, who.account.id, body.batch_id, body.status):
        raise APIError(400, [Problem(BATCH_UNKNOWN, "batch_id")])
    return ScheduledSend(batch_id=body.batch_id, status=body.status)


def _listed(conn: Connection, account_id: int, batch_id: str | None = None) -> list[dict[str, Any]]:
    b = mail_batches.c
    query = sa.select(b.id, b.status).where(b.account_id == account_id, b.status.is_not(None)).order_by(b.created_at)
    if batch_id is not None:
        query = query.where(b.id == batch_id)
    return [{"batch_id": row.id, "status": row.status} for row in conn.execute(query)]


@router.get("/v3/user/scheduled_sends", summary="Paused and cancelled batches")
async def list_scheduled_sends(request: Request, who: Annotated[Caller, Depends(needs("user.scheduled_sends.read"))]
                               ) -> list[ScheduledSend]:
    rows = await _read(request, lambda conn: _listed(conn, who.account.id))
    return [ScheduledSend(**row) for row in rows]


@router.get("/v3/user/scheduled_sends/{batch_id}", responses=_NOT_FOUND, summary="A batch's pause or cancel")
async def get_scheduled_send(request: Request, batch_id: BatchId,
                             who: Annotated[Caller, Depends(needs("user.scheduled_sends.read"))]
                             ) -> list[ScheduledSend]:
    rows = await _read(request, lambda conn: _listed(conn, who.account.id, batch_id))
    if not rows:
        raise APIError(404, "not found")
    return [ScheduledSend(**row) for row in rows]


@router.patch("/v3/user/scheduled_sends/{batch_id}", responses=_NOT_FOUND, status_code=204,
               summary="Change a pause into a cancel")
async def update_scheduled_send(request: Request, batch_id: BatchId, body: StatusChange,
                                who: Annotated[Caller, Depends(needs("user.scheduled_sends.update"))]) -> Response:
    found, state = await _read(request, lambda conn: _status(conn, who.account.id, batch_id))
    if not found or state is None:
        raise APIError(404, "not found")
    if state == batches.CANCEL and body.status == batches.PAUSE:
        raise APIError(400, [Problem("a cancelled batch cannot be paused: its mail is already dropped", "status")])
    if not await _set(request, who.account.id, batch_id, body.status):
        raise APIError(404, "not found")
    return Response(status_code=204)


@router.delete("/v3/user/scheduled_sends/{batch_id}", responses=_NOT_FOUND, status_code=204,
               summary="Resume a batch")
async def delete_scheduled_send(request: Request, batch_id: BatchId,
                                who: Annotated[Caller, Depends(needs("user.scheduled_sends.delete"))]) -> Response:
    found, state = await _read(request, lambda conn: _status(conn, who.account.id, batch_id))
    if not found or state is None:
        raise APIError(404, "not found")
    await _set(request, who.account.id, batch_id, None)
    return Response(status_code=204)
