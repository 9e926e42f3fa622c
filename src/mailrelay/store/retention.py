"""Retention: finished mail's bodies cleared, then finished mail deleted, in small batches.

Four kinds, each with its own period (settings `[retention]`): `bodies` (outbound mail whose
every recipient is final: its body row is deleted, which frees its pages (store.bodies), the
rest stays for the activity page), `messages` (the same mail deleted with its body,
recipients, attempts, events and categories), `sandbox` (captured mail) and `inbound`
(received mail, posted, expired or kept).

A message qualifies only when it arrived before the cutoff, none of its recipients changed
since, every recipient has its kind's final status, none waits for its DSN (`dsn_pending`) and
none of its events waits for the webhook. Queued and deferred mail is never touched, whatever
its age. Candidates are found with a read (`find`), then `apply` checks each again by primary
key inside the write transaction, so a recipient retried by an operator in between keeps its
message. On PostgreSQL `apply` locks the rows it takes with SKIP LOCKED: sweepers of several
nodes share the work instead of waiting for each other. Each batch is one short transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.core import status
from mailrelay.store import bodies
from mailrelay.store.schema import attempts, events, message_categories, messages, recipients

DAY: Final = 86_400.0
KINDS: Final = ("bodies", "messages", "sandbox", "inbound")
COUNTED: Final = ("messages", "recipients", "attempts", "events", "bytes")  # what a batch reports

_FINAL_STATUSES: Final = {
    "bodies": status.FINAL,
    "messages": status.FINAL,
    "sandbox": (*status.FINAL, status.CAPTURED),
    "inbound": (status.POSTED, status.EXPIRED, status.KEPT),
}


@dataclass
class Removed:
    """What one kind's sweep removed (or would remove): messages, their rows, body bytes."""

    kind: str
    messages: int = 0
    recipients: int = 0
    attempts: int = 0
    events: int = 0
    bytes: int = 0  # body and trace-header bytes freed, as stored (compressed bodies compressed)
    batches: int = 0

    def add(self, other: Removed) -> None:
        for name in (*COUNTED, "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Cursor:
    """Where the next `find` of one kind starts: (created_at, id) of the last candidate seen."""

    created_at: float = float("-inf")
    id: str = ""
    done: bool = False


def _qualifies(kind: str, cutoff: float, spare: float | None = None) -> sa.ColumnElement[bool]:
    """`spare` (kind "bodies"): the messages cutoff; mail deleted at it is left to that kind,
    so a dry run counts each message once, as the real run (deletes first) does."""
    m, r = messages, recipients
    if kind == "inbound":
        which = m.c.direction == "in"
    elif kind == "sandbox":
        which = sa.and_(m.c.direction == "out", m.c.sandbox == sa.true())
    else:
        which = sa.and_(m.c.direction == "out", m.c.sandbox == sa.false())
    unfinished = sa.select(sa.literal(1)).where(
        r.c.message_id == m.c.id,
        sa.or_(r.c.status.not_in(_FINAL_STATUSES[kind]), r.c.dsn_pending.is_not(None), r.c.updated_at >= cutoff))
    unposted = sa.select(sa.literal(1)).where(events.c.message_id == m.c.id, events.c.webhook_due_at.is_not(None))
    cond = sa.and_(which, m.c.created_at < cutoff, ~unfinished.exists(), ~unposted.exists())
    if kind == "bodies":
        cond = sa.and_(cond, bodies.present())
        if spare is not None:
            cond = sa.and_(cond, ~_qualifies("messages", spare))
    return cond


def find(conn: Connection, kind: str, cutoff: float, limit: int, cursor: Cursor,
         spare: float | None = None) -> list[str]:
    """Up to `limit` queue ids of `kind` qualifying at `cutoff`, oldest first, after `cursor`
    (which moves on). A read: nothing is locked or changed."""
    m = messages
    after = sa.or_(m.c.created_at > cursor.created_at,
                   sa.and_(m.c.created_at == cursor.created_at, m.c.id > cursor.id))
    rows = conn.execute(sa.select(m.c.id, m.c.created_at).where(_qualifies(kind, cutoff, spare), after)
                        .order_by(m.c.created_at, m.c.id).limit(limit)).all()
    if len(rows) < limit:
        cursor.done = True
    if rows:
        cursor.created_at, cursor.id = rows[-1].created_at, rows[-1].id
    return [row.id for row in rows]


def apply(conn: Connection, kind: str, cutoff: float, ids: list[str], *, dry_run: bool = False,
          spare: float | None = None) -> Removed:
    """Clear the bodies of (kind "bodies") or delete the messages `ids` that still qualify,
    in the caller's transaction; `dry_run` counts the same without changing anything."""
    out = Removed(kind, batches=1)
    if not ids:
        return out
    m = messages
    check = sa.select(m.c.id).where(m.c.id.in_(ids), _qualifies(kind, cutoff, spare)).order_by(m.c.id)
    if conn.dialect.name == "postgresql" and not dry_run:
        check = check.with_for_update(of=m, skip_locked=True)
    keep = [row.id for row in conn.execute(check)]
    if not keep:
        return out
    out.messages = len(keep)
    out.bytes = bodies.stored_bytes(conn, keep)
    if kind == "bodies":
        if not dry_run:
            bodies.clear(conn, keep)
        return out
    children = ((events, "events"), (attempts, "attempts"), (message_categories, None), (recipients, "recipients"))
    for table, name in children:
        where = table.c.message_id.in_(keep)
        if dry_run:
            n = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
        else:
            n = conn.execute(table.delete().where(where)).rowcount
        if name is not None:
            setattr(out, name, int(n))
    if not dry_run:
        bodies.delete(conn, keep)
        conn.execute(m.delete().where(m.c.id.in_(keep)))
    return out


ORDER: Final = ("messages", "sandbox", "inbound", "bodies")  # deletes first: no body cleared only to go


@dataclass(frozen=True)
class Plan:
    """One sweep's cutoffs (kinds kept for ever left out), in the order they are swept."""

    cutoff: dict[str, float]

    @classmethod
    def at(cls, now: float, days: dict[str, float]) -> Plan:
        return cls({kind: now - days[kind] * DAY for kind in ORDER if days.get(kind, 0) > 0})

    def spare(self, kind: str) -> float | None:
        return self.cutoff.get("messages") if kind == "bodies" else None


def sweep(engine: sa.Engine, plan: Plan, *, batch: int, dry_run: bool = False,
          progress: Callable[[Removed], None] | None = None) -> dict[str, Removed]:
    """Sweep every kind of `plan` now, one transaction per batch (the CLI's sweep; the serve
    process's goes through its writer, spool.retention). `progress` gets each kind's running
    total after every batch."""
    totals = {kind: Removed(kind) for kind in plan.cutoff}
    for kind, cutoff in plan.cutoff.items():
        cursor, spare = Cursor(), plan.spare(kind)
        while not cursor.done:
            with engine.connect() as conn:
                ids = find(conn, kind, cutoff, batch, cursor, spare)
            if not ids:
                break
            with engine.begin() as conn:
                totals[kind].add(apply(conn, kind, cutoff, ids, dry_run=dry_run, spare=spare))
            if progress is not None:
                progress(totals[kind])
    if not dry_run:
        while incremental_vacuum(engine):
            pass
    return totals


VACUUM_PAGES: Final = 2048  # pages given back per step (8 MiB of 4 KiB pages): a short write lock each


def incremental_vacuum(engine: sa.Engine, pages: int = VACUUM_PAGES) -> int:
    """SQLite: give up to `pages` free pages back to the file system when the database was made
    with auto_vacuum=INCREMENTAL; returns the free pages left (0 elsewhere, and always on an
    older database, whose free pages are reused by new rows instead). Its own transaction:
    Python's sqlite3 frees one page per step of a PRAGMA, so it goes through executescript,
    which runs it to the end (and would commit a transaction in progress first)."""
    if engine.dialect.name != "sqlite":
        return 0
    with engine.connect() as conn:
        if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:
            return 0
        if not conn.exec_driver_sql("PRAGMA freelist_count").scalar():
            return 0
        conn.commit()
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
        return int(conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)
