"""Enqueue with group commit: many sessions' messages share one database transaction.

A message is answered 250 only after the transaction holding it has committed (SQLite:
WAL with synchronous=FULL, so fsynced; PostgreSQL: synchronous_commit as configured), so it
survives `kill -9`. One writer thread takes whatever is waiting, up to `max_batch`, and commits
it at once: under load the cost of an fsync is shared, at rest a message waits for nobody.

The writer keeps the queue's clock (store.clock): on PostgreSQL the database server's time, so
that mail queued here is due at once for a node whose clock is behind ours. On PostgreSQL a
commit with new mail wakes the delivery of every node (spool.wakeups).

A message of an account with a per-minute rate carries a `RateGate`: its emails are taken from
the account's shared bucket in the same transaction (mailrelay.quota.rate; one statement per
account and batch), and if they do not fit it is left out of the batch and its future fails
with the gate's refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.engine import Connection, Engine

from mailrelay.core import status
from mailrelay.core.address import domain_of
from mailrelay.quota.rate import RateGate, take_all, take_shared
from mailrelay.quota.usage import add_usage
from mailrelay.spool import batches
from mailrelay.spool.wakeups import notify
from mailrelay.store import bodies
from mailrelay.store.clock import DatabaseClock
from mailrelay.store.eventlog import add_events
from mailrelay.store.health import StorageHealth, StorageUnavailable, describe, is_conflict, is_unavailable
from mailrelay.store.schema import message_bodies, message_categories, messages, recipients

log = logging.getLogger("mailrelay.spool")

CONFLICT_RUNS = 5  # runs of a batch that PostgreSQL keeps choosing as a deadlock victim


class Rows(NamedTuple):
    """A message's rows: `messages`, `message_bodies` and `recipients`."""

    message: dict[str, Any]
    body: dict[str, Any]
    recipients: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One accepted message, ready to be written."""

    queue_id: str
    account_id: int
    mail_from: str
    mail_params: dict[str, str | None]
    recipients: list[tuple[str, dict[str, str | None]]]
    client_ip: str
    helo: str
    auth_user: str | None
    tls_version: str | None
    tls_cipher: str | None
    listener: str
    trace_headers: bytes
    body: bytes
    created_at: float
    message_id_header: str | None = None  # the Message-ID field, for events (SendGrid's smtp-id)
    subject: str | None = None
    tags: dict[str, Any] | None = None  # X-SMTPAPI category / unique_args, copied onto events
    sandbox: bool = False  # captured by the delivery agent instead of delivered
    count_usage: int = 0  # recipients to add to the account's usage in this transaction
    processed_event: bool = True  # a "processed" event per recipient (not for our own bounces)
    direction: str = "out"  # "in": received for an inbound domain, handed to its webhook
    auth: dict[str, Any] | None = None  # inbound: SPF/DKIM/DMARC/iprev results (JSON)
    initial_status: str = status.QUEUED  # inbound mail: INBOUND (to post) or KEPT (inbox only)
    not_before: float | None = None  # first attempt no earlier (the API's send_at); None: now
    batch_id: str | None = None  # the API's batch_id: paused or cancelled with it (spool.batches)
    rate_gate: RateGate | None = None  # stored only if its emails fit the account's shared rate

    def rows(self, due_at: float | None = None) -> Rows:
        """The rows to insert; `due_at`: the first attempt time of mail to be sent at once (on
        the queue's clock; default: `created_at`). Compresses the body (store.bodies), so the
        writer calls it before it takes the write lock."""
        msg = {
            "id": self.queue_id, "account_id": self.account_id, "mail_from": self.mail_from,
            "mail_params": json.dumps(self.mail_params), "client_ip": self.client_ip,
            "helo": self.helo, "auth_user": self.auth_user, "tls_version": self.tls_version,
            "tls_cipher": self.tls_cipher, "listener": self.listener,
            "size": len(self.trace_headers) + len(self.body), "trace_headers": b"", "body": b"",
            "created_at": self.created_at,
            "message_id_header": self.message_id_header, "subject": self.subject,
            "tags": json.dumps(self.tags) if self.tags else None, "sandbox": self.sandbox,
            "direction": self.direction, "auth": json.dumps(self.auth) if self.auth is not None else None,
            "batch_id": self.batch_id,
        }
        rcpts = [
            {"message_id": self.queue_id, "address": addr, "domain": domain_of(addr),
             "params": json.dumps(params), "status": self.initial_status, "attempts": 0,
             "next_attempt_at": self.not_before or due_at or self.created_at, "updated_at": self.created_at,
             "account_id": self.account_id}
            for addr, params in self.recipients
        ]
        return Rows(msg, bodies.row(self.queue_id, self.trace_headers, self.body), rcpts)

    def category_rows(self) -> list[dict[str, Any]]:
        """The message's categories for `message_categories` (the activity page's filter)."""
        found = (self.tags or {}).get("category")
        names = [found] if isinstance(found, str) else found if isinstance(found, list) else []
        return [{"account_id": self.account_id, "category": name, "message_id": self.queue_id}
                for name in dict.fromkeys(n for n in names if isinstance(n, str) and n)]


_Item = tuple[Any, "asyncio.Future[Any]", Any]  # (SpoolRecord, tuple of them, or op; future; result)
_Result = tuple["asyncio.Future[Any]", Any, BaseException | None]
_STOP = object()
_FROM_OP = object()  # marks an op's item: its future gets what the op returned


@dataclass(frozen=True, slots=True)
class _Refused:
    """In place of an item's result: its rate gate refused it, nothing of it was written."""

    error: BaseException
T = TypeVar("T")


class SpoolWriter:
    """The one writer thread of a process; `submit` from the event loop, await the future."""

    def __init__(self, engine: Engine, *, max_batch: int = 512, inline: bool = False,
                 clock: DatabaseClock | None = None) -> None:
        """`inline`: write on the event loop's own thread, batching what one loop iteration
        submitted. For delivery-only processes, whose loop is busy with CPU work (DKIM): a
        writer thread would hold the database's write lock while waiting for the GIL, and the
        SMTP process, which needs that lock for every 250, would wait with it.
        `clock`: the queue's clock (default: the database's, store.clock)."""
        self._engine = engine
        self.clock = clock or DatabaseClock(engine.dialect.name)
        self._inline = inline
        self._pending: list[Any] = []
        self._lock_fd = _writer_lock(engine)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.written = 0
        self.conflicts = 0  # batches run again after losing a conflict
        self.health = StorageHealth()
        self.on_enqueued: Callable[[], None] | None = None  # called on the loop after new mail commits

    def now(self) -> float:
        """The time on the queue's clock: what claims, leases and retries are written in."""
        return self.clock.now()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._inline:
            return
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def submit(self, record: SpoolRecord, result: T) -> asyncio.Future[T]:
        """Queue `record`; the future gets `result` once the record is committed."""
        assert self._loop is not None, "SpoolWriter.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._put((record, fut, result))
        return fut

    def submit_many(self, records: Sequence[SpoolRecord], result: T) -> asyncio.Future[T]:
        """Queue `records` to be committed together, in one transaction: all or none."""
        assert self._loop is not None, "SpoolWriter.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._put((tuple(records), fut, result))
        return fut

    def run(self, op: Callable[[Connection], T]) -> asyncio.Future[T]:
        """Run `op(conn)` in the writer thread inside the next transaction; its return value
        (or exception) comes back through the future. Ops share commits with enqueues."""
        assert self._loop is not None, "SpoolWriter.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._put((op, fut, _FROM_OP))
        return fut

    def _put(self, item: _Item) -> None:
        if not self._inline:
            self._queue.put(item)
            return
        if not self._pending:
            assert self._loop is not None
            self._loop.call_soon(self._flush_inline)
        self._pending.append(item)

    def _flush_inline(self) -> None:
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), self._max_batch):
            self._write(batch[i:i + self._max_batch])

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        if self._inline and self._pending:
            self._flush_inline()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Item] = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Item]) -> None:
        try:
            op_results = self._commit_again_on_conflict(batch)
        except Exception as exc:
            if is_unavailable(exc):
                # The database, not this batch: one by one would only fail again, slower.
                self.health.failed(exc, messages=sum(len(_records(work)) for work, _, _ in batch))
                unavailable = StorageUnavailable(describe(exc))
                self._resolve([(fut, None, unavailable) for _, fut, _ in batch])
                return
            if len(batch) == 1:
                work = batch[0][0]
                what = (",".join(r.queue_id for r in _records(work)) or getattr(work, "__name__", "op"))
                log.error("database write (%s) failed: %s", what, exc)
                self._resolve([(batch[0][1], None, exc)])
                return
            # One bad message must not fail the others: retry them one by one.
            for item in batch:
                self._write([item])
            return
        self.health.succeeded()
        self.batches += 1
        enqueued = sum(len(_records(work)) for (work, _, _), r in zip(batch, op_results, strict=True)
                       if not isinstance(r, _Refused))
        self.written += enqueued
        results: list[_Result] = []
        for (_, fut, result), op_result in zip(batch, op_results, strict=True):
            if isinstance(op_result, _Refused):
                results.append((fut, None, op_result.error))
            else:
                results.append((fut, op_result if result is _FROM_OP else result, None))
        self._resolve(results, wake=enqueued > 0)

    def _commit_again_on_conflict(self, batch: list[_Item]) -> list[Any]:
        """`_commit`, run again when PostgreSQL chose it as a deadlock victim (or it lost a
        serialization conflict): the other transaction has gone on, so a run a moment later
        succeeds. Before this, such a batch was retried message by message, and each could
        lose again: 10 of 10,000 batches of a three-node run refused their mail with 451."""
        for run in range(1, CONFLICT_RUNS + 1):
            try:
                return self._commit(batch)
            except Exception as exc:
                if run == CONFLICT_RUNS or not is_conflict(exc):
                    raise
                self.conflicts += 1
                log.info("database write lost a conflict (%s); writing it again (run %d of %d)",
                         describe(exc), run + 1, CONFLICT_RUNS)
                time.sleep(random.uniform(0.005, 0.02) * run)  # apart from the other side's retry
        raise AssertionError("unreachable")

    def _commit(self, batch: list[_Item]) -> list[Any]:
        """One transaction: the rate gates, the new messages (but those the gates refused) in
        bulk inserts, then the ops in order. Rows are built before the lock is taken."""
        if self.clock.due():  # PostgreSQL, every SYNC_SECONDS: one query outside the write lock
            with self._engine.connect() as conn:
                self.clock.sync(conn)
        due_at = self.clock.now()
        rows = _Rows([work for work, _, _ in batch], due_at)
        gates = [(i, r) for i, (work, _, _) in enumerate(batch) for r in _records(work) if r.rate_gate is not None]
        out: list[Any] = [None] * len(batch)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with self._engine.begin() as conn:
                # In account order: PostgreSQL locks each account's row until the commit, and
                # batches of two nodes taking them in opposite orders would deadlock.
                for group in _by_account(gates):
                    now = max(record.created_at for _, record in group)
                    if len(group) > 1 and take_all(conn, [r.rate_gate for _, r in group if r.rate_gate], now):
                        continue  # the common case: one statement for all of the account's mail
                    for i, record in group:  # one by one: those that do not fit are left out
                        gate = record.rate_gate
                        assert gate is not None
                        take_shared(conn, gate, record.created_at)
                        if gate.wait:
                            out[i] = _Refused(gate.refusal(gate.wait))
                if gates and any(isinstance(r, _Refused) for r in out):  # rare: rebuilt without them
                    rows = _Rows([work for (work, _, _), r in zip(batch, out, strict=True)
                                  if not isinstance(r, _Refused)], due_at)
                rows.insert(conn)
                for i, (work, _, _) in enumerate(batch):
                    if not isinstance(work, (SpoolRecord, tuple)):
                        out[i] = work(conn)
        except BaseException:
            for _, record in gates:  # answers of a transaction that did not commit: none
                assert record.rate_gate is not None
                record.rate_gate.full_at, record.rate_gate.wait = None, 0.0
            raise
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return out

    def _resolve(self, results: list[_Result], *, wake: bool = False) -> None:
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody waits for these replies any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_set_results, results, self.on_enqueued if wake else None)


def _records(work: Any) -> tuple[SpoolRecord, ...]:
    """The messages of a queued item: one (`submit`), several (`submit_many`) or none (an op)."""
    if isinstance(work, SpoolRecord):
        return (work,)
    return work if isinstance(work, tuple) else ()


class _Rows:
    """The rows of the messages among `works` (ops have none): messages, recipients, their
    categories and "processed" events, usage counted with them, batches they join."""

    def __init__(self, works: list[Any], due_at: float) -> None:
        self.msgs: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []
        self.rcpts: list[dict[str, Any]] = []
        self.categories: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.usage: dict[int, int] = {}
        self.batch_ids: list[str] = []
        for work in works:
            for record in _records(work):
                m, b, r = record.rows(due_at)
                self.msgs.append(m)
                self.bodies.append(b)
                self.rcpts.extend(r)
                self.categories.extend(record.category_rows())
                if record.processed_event:
                    self.events.extend(
                        {"account_id": record.account_id, "message_id": record.queue_id, "recipient": addr,
                         "type": status.EV_PROCESSED, "at": record.created_at} for addr, _ in record.recipients)
                if record.batch_id is not None:
                    self.batch_ids.append(record.batch_id)
                if record.count_usage:
                    self.usage[record.account_id] = self.usage.get(record.account_id, 0) + record.count_usage

    def insert(self, conn: Connection) -> None:
        if not self.msgs:
            return
        conn.execute(messages.insert(), self.msgs)
        conn.execute(message_bodies.insert(), self.bodies)
        conn.execute(recipients.insert(), self.rcpts)
        if self.categories:
            conn.execute(message_categories.insert(), self.categories)
        add_events(conn, self.events)
        if self.usage:
            add_usage(conn, self.usage, self.msgs[0]["created_at"])
        if self.batch_ids:  # held or dropped before anyone can claim them, if paused or cancelled
            batches.apply(conn, self.batch_ids, self.msgs[0]["created_at"])
        notify(conn)  # PostgreSQL: every node's delivery hears of it on commit, once per batch


def _by_account(gates: list[tuple[int, SpoolRecord]]) -> list[list[tuple[int, SpoolRecord]]]:
    """The gated messages of a batch by account and rate, accounts in id order, each group in
    batch order."""
    groups: dict[tuple[int, int], list[tuple[int, SpoolRecord]]] = {}
    for i, record in gates:
        assert record.rate_gate is not None
        groups.setdefault((record.account_id, record.rate_gate.rate), []).append((i, record))
    return [groups[key] for key in sorted(groups)]


def _writer_lock(engine: Engine) -> int | None:
    """SQLite has one write lock, and a writer that finds it taken polls in sleeps of 1, 2,
    5, 10... ms. The writers of one database (the SMTP process and its delivery workers) queue
    on a file lock beside it instead, which hands over the moment it is released."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return os.open(f"{engine.url.database}.writelock", os.O_RDWR | os.O_CREAT, 0o600)


def _set_results(results: list[_Result], wake: Callable[[], None] | None = None) -> None:
    if wake is not None:
        wake()
    for fut, result, exc in results:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)
