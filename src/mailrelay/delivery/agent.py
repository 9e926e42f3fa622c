"""The delivery workers of one node: claim due recipients, talk to their servers, record.

One loop claims batches of due recipients (leased, next attempt written first) through the
spool writer; each claim (one message at one domain) becomes a job that waits for a slot under
two limits — connections in total and per destination domain — then reuses or opens a
connection and runs one SMTP transaction. Outcomes go back through the writer in batches.

Once, not twice: the agent's lease owner name is unique to this start of this process, and a
heartbeat proves it alive (spool.nodes), so no other process hands back its leases while it
works. Stopping (SIGTERM, or the parent gone) starts no new transaction: jobs not yet talking
to a server give their recipients back at once, those mid-transaction finish and are recorded.
An outcome the database cannot take now is kept in memory and written when it is back, never
dropped to be sent again at lease expiry.

Security: outbound connections go only where DNS (or a configured route) says, never to
private or loopback addresses unless `delivery.allow_private_destinations` is set (routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Connection

from mailrelay import metrics
from mailrelay.core.linelength import fit_lines, has_long_line
from mailrelay.delivery.classify import Verdict
from mailrelay.delivery.outcomes import RecipientOutcome, filter_suppressed, record_many, report_waiting_failures
from mailrelay.delivery.providers import provider_of
from mailrelay.delivery.routing import RouteCache, RoutingError
from mailrelay.delivery.transfer import ConnectionPool, HostFailed, TransactionResult, connect, send
from mailrelay.resolver.base import Resolver
from mailrelay.sandbox.capture import record_captures
from mailrelay.settings import DeliverySettings
from mailrelay.spool import nodes
from mailrelay.spool.leases import Claim, claim_due, hand_back
from mailrelay.spool.schedule import backoff, expired
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store.health import is_unavailable

log = logging.getLogger("mailrelay.delivery")

Signer = Callable[[int, bytes], bytes]  # (account id, message) -> header lines to prepend
# Outcomes are written in one statement per this many seconds, not one per loop iteration:
# fewer commits (each costs the database write lock) for a few milliseconds more of the
# window in which a crash after the remote 250 sends a message twice.
OUTCOME_WINDOW = 0.01
# A finished job: its claim, what happened, and the future that gets the bounce's queue id.
_Finished = tuple[Claim, list[RecipientOutcome], "asyncio.Future[str | None]"]
_Captured = tuple[Claim, bytes, "asyncio.Future[None]"]  # a sandbox claim and its DKIM signature
HELD_RETRY_MAX = 10.0  # seconds between tries to write outcomes kept through an outage


class Interrupted(Exception):
    """The agent is stopping and this job has not started talking to a server: give it back."""


class DeliveryAgent:
    def __init__(self, *, settings: DeliverySettings, writer: SpoolWriter, resolver: Resolver,
                 hostname: str, signer: Signer | None = None, node: str | None = None,
                 poll_interval: float = 1.0) -> None:
        self.settings = settings
        self.writer = writer
        self.resolver = resolver
        self.hostname = hostname
        self.signer = signer
        self.node = node or nodes.new_name(socket.gethostname())
        self.poll_interval = poll_interval
        self.pool = ConnectionPool(settings.connection_reuse_seconds)
        self.routes = RouteCache(resolver=resolver, settings=settings)
        self._total = asyncio.Semaphore(settings.max_connections)
        self._per_domain: dict[str, asyncio.Semaphore] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._finished: list[_Finished] = []  # outcomes waiting for the next write
        self._captured: list[_Captured] = []  # sandbox captures waiting for the next write
        # Keep about two jobs per connection slot in hand: enough to keep every slot busy, few
        # enough that leases are not held long by jobs waiting for a slot.
        self._high_water = max(2 * settings.max_connections, 50)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._watch = nodes.Watch(me=self.node, dead_after=settings.dead_after)
        self._sending: set[asyncio.Task[None]] = set()  # jobs in an SMTP transaction: never cancelled
        self._given_back: list[int] = []  # recipient ids of jobs stopped before they started
        self._held: list[_Finished] = []  # outcomes the database could not take yet
        self._writing = 0  # outcome writes in flight
        self._held_since = 0.0
        self._held_delay = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        host = socket.gethostname()
        await self.writer.run(functools.partial(nodes.register, name=self.node, host=host, now=time.time()))
        log.info("delivery agent %s started", self.node)
        loop = asyncio.get_running_loop()
        self.writer.health.on_back.append(functools.partial(self._database_back, loop))
        self._heartbeat_task = loop.create_task(self._heartbeat(host), name="delivery-heartbeat")
        self._task = loop.create_task(self._run(), name="delivery-agent")

    def wake(self) -> None:
        """New mail was queued: claim now instead of at the next poll."""
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming and start no new transaction: jobs not yet talking to a server give
        their recipients back; transactions in flight finish (bounded) and are recorded. The
        heartbeat goes on until `leave`: a stopping node is not dead."""
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
        for task in self._jobs - self._sending:
            task.cancel()
        if self._jobs:
            _, pending = await asyncio.wait(set(self._jobs), timeout=max(0.1, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self.pool.expire(everything=True)

    async def leave(self, timeout: float) -> None:
        """After `stop` and after every other user of our lease name (the inbound dispatcher)
        has stopped: write what is still held, give back unstarted work, then leave the nodes
        table, handing back whatever an interrupted transaction still leased. Retried until
        the deadline while the database is away; after that another node buries us."""
        deadline = time.monotonic() + timeout
        try:
            while not await self._leave_once():
                if time.monotonic() >= deadline:
                    if self._held:
                        held = ", ".join(sorted({c.message.id for c, _, _ in self._held}))
                        log.error("stopping with %d delivery outcomes not recorded (database unavailable): %s; "
                                  "they are tried again once this node is found dead", len(self._held), held)
                    return
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()

    async def _stop_heartbeat(self) -> None:
        task = self._heartbeat_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _leave_once(self) -> bool:
        # Outcomes first, and written before the lease goes: a recipient handed back with its
        # 250 unrecorded would be sent again.
        if self._finished:
            self._flush_outcomes()
        if self._held:
            self._flush_outcomes(self._held_take())
        if self._writing or self._held:
            return False
        try:
            if self._given_back:
                ids = self._given_back
                n = await self.writer.run(functools.partial(hand_back, node=self.node, ids=ids, now=time.time()))
                self._given_back = self._given_back[len(ids):]
                log.info("stopping: %d recipients not yet sent are due again now", n)
            # The heartbeat stops first: a beat written after our row is gone would put it back
            # (nodes.beat re-registers), and the next node to start would find us dead.
            await self._stop_heartbeat()
            left = await self.writer.run(functools.partial(nodes.leave, name=self.node, now=time.time()))
        except Exception as exc:
            if is_unavailable(exc):
                return False
            log.error("stopping: could not give back leases: %s", exc)
            return True
        if left:
            log.warning("stopping: %d recipients interrupted mid-transaction are due again now", left)
        return True

    async def _heartbeat(self, host: str) -> None:
        """Beat, and bury the nodes proven dead (their leases are due now): at once for those
        that ran on this machine and whose process is gone, after `dead_after` for others.
        Runs until `leave`; a stopping node still beats but buries nobody."""
        s = self.settings
        started = True
        while True:
            if not started:
                await asyncio.sleep(s.heartbeat_seconds)
            try:
                if not started and not await self.writer.run(functools.partial(
                        nodes.beat, name=self.node, host=host, now=time.time())):
                    log.warning("delivery agent %s was taken for dead (no heartbeat for %gs) and its leases "
                                "were handed back; it goes on", self.node, s.dead_after)
                started = False
                if self._stopping:
                    continue
                rows = await self.writer.run(nodes.heartbeats)
                gone = {n.name: f"its process {n.pid} no longer runs on this machine"
                        for n in nodes.gone_here(rows, me=self.node)}
                for n in self._watch.dead(rows, now=time.monotonic()):
                    gone.setdefault(n.name, f"no heartbeat for {s.dead_after:g}s")
                for node in rows:
                    if node.name not in gone:
                        continue
                    count = await self.writer.run(functools.partial(
                        nodes.bury, name=node.name, heartbeat_at=node.heartbeat_at, now=time.time()))
                    if count is not None:
                        log.warning("delivery agent %s is dead (%s): %d recipients it leased are due again now",
                                    node.name, gone[node.name], count)
                        self.wake()
                await self.writer.run(functools.partial(report_waiting_failures, now=time.time(),
                                                        hostname=self.hostname))
            except Exception as exc:
                if is_unavailable(exc):
                    self._watch.forget()  # unseen time proves nothing
                else:
                    log.exception("heartbeat failed")

    # -- the claim loop -------------------------------------------------------------------

    async def _run(self) -> None:
        high_water = self._high_water
        last_expire = time.monotonic()
        while not self._stopping:
            self._wake.clear()  # before claiming: a wake-up from here on is kept for the wait
            room = high_water - len(self._jobs)
            claims: list[Claim] = []
            if room > 0 and not self._held:  # outcomes first: the database is back when they are in
                try:
                    claims = await self.writer.run(functools.partial(
                        self._claim, node=self.node, now=time.time(), limit=min(room, 500)))
                except Exception as exc:
                    if not is_unavailable(exc):  # an outage is logged once, by the writer
                        log.exception("claiming due recipients failed; retrying shortly")
                    claims = []
            if self._stopping:
                self._given_back.extend(r.id for c in claims for r in c.recipients)
                claims = []
            for claim in claims:
                task = asyncio.get_running_loop().create_task(self._job(claim))
                self._jobs.add(task)
                task.add_done_callback(self._job_done)
            if time.monotonic() - last_expire > 1.0:
                last_expire = time.monotonic()
                await self.pool.expire()
            if claims and len(claims) >= min(room, 500):
                await asyncio.sleep(0)  # more may be due right away
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._sending.discard(task)
        # Half the jobs in hand are done: claim more now rather than at the next poll, or a
        # busy queue would be worked through one poll interval at a time.
        if len(self._jobs) <= self._high_water // 2:
            self._wake.set()

    def _claim(self, conn: Connection, *, node: str, now: float, limit: int) -> list[Claim]:
        s = self.settings
        claims = claim_due(conn, node=node, now=now, limit=limit, lease_seconds=s.lease_seconds,
                           next_attempt=functools.partial(backoff, first=s.retry_first, cap=s.retry_max))
        return filter_suppressed(conn, claims, now=now)

    # -- one job --------------------------------------------------------------------------

    def _domain_slot(self, domain: str) -> asyncio.Semaphore:
        sem = self._per_domain.get(domain)
        if sem is None:
            sem = self._per_domain[domain] = asyncio.Semaphore(self.settings.max_per_domain)
        return sem

    async def _job(self, claim: Claim) -> None:
        if claim.message.sandbox:
            await self._capture(claim)
            return
        try:
            async with self._domain_slot(claim.domain), self._total:
                outcomes = await self._deliver(claim)
        except (Interrupted, asyncio.CancelledError):
            if asyncio.current_task() in self._sending:
                raise  # cut off mid-transaction at the stop deadline: nodes.leave hands it back
            # Stopping before a transaction began: nothing was sent, the recipients go back.
            self._given_back.extend(r.id for r in claim.recipients)
            return
        except Exception as exc:  # a bug must defer one message, not stop the agent
            if is_unavailable(exc):  # before sending (DKIM keys unread): deferred, no traceback
                verdict = Verdict("deferred", "4.3.0", "not sent: the database is unavailable", remote=False)
            else:
                log.exception("delivery of %s to %s failed unexpectedly", claim.message.id, claim.domain,
                              extra={"queue_id": claim.message.id, "account": claim.message.account})
                verdict = Verdict("deferred", "4.3.0", f"internal error: {type(exc).__name__}", remote=False)
            outcomes = [RecipientOutcome(r, verdict) for r in claim.recipients]
        for out in outcomes:
            log.info("%s: to=<%s> relay=%s[%s] tls=%s status=%s (%s %s)", claim.message.id, out.recipient.address,
                     out.host or "none", out.ip or "", out.tls or "no", out.verdict.outcome, out.verdict.status,
                     out.verdict.diagnostic[:200],
                     extra={"queue_id": claim.message.id, "account": claim.message.account,
                            "event": out.verdict.outcome, "status": out.verdict.status,
                            "recipient": out.recipient.address, "relay": out.host or "none"})
        try:
            bounce = await self._record(claim, outcomes)
        except Exception as exc:
            # E.g. an operator deleted the message meanwhile (an outage is not here: those
            # outcomes are held until the database is back).
            log.warning("could not record the outcome for %s: %s", claim.message.id, exc,
                        extra={"queue_id": claim.message.id, "account": claim.message.account})
            return
        _count(claim, outcomes, self.settings.max_lifetime)
        if bounce is not None:
            self.wake()

    def _record(self, claim: Claim, outcomes: list[RecipientOutcome]) -> asyncio.Future[str | None]:
        """Outcomes of the jobs that finish within OUTCOME_WINDOW are written together."""
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        if not self._finished:
            asyncio.get_running_loop().call_later(OUTCOME_WINDOW, self._flush_outcomes)
        self._finished.append((claim, outcomes, fut))
        return fut

    def _flush_outcomes(self, batch: list[_Finished] | None = None) -> None:
        if batch is None:
            batch, self._finished = self._finished, []
        if not batch:
            return
        op = functools.partial(record_many, items=[(c, o) for c, o, _ in batch], now=time.time(),
                               hostname=self.hostname, max_lifetime=self.settings.max_lifetime,
                               delay_warning=self.settings.delay_warning)
        self._writing += 1

        def written(done: asyncio.Future[list[str | None]]) -> None:
            self._writing -= 1
            exc = done.exception()
            if exc is not None and is_unavailable(exc):
                self._hold(batch, exc)
                return
            if exc is not None and len(batch) > 1:
                for item in batch:  # one bad item must not fail the others: one by one
                    self._flush_outcomes([item])
                return
            if self._held_since and not self._held:
                log.warning("delivery outcomes held through a database outage are recorded (after %.1f s)",
                            time.monotonic() - self._held_since)
                self._held_since = 0.0
                self._held_delay = 0.0
            for i, (_, _, fut) in enumerate(batch):
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(done.result()[i])

        self.writer.run(op).add_done_callback(written)

    def _hold(self, batch: Sequence[_Finished], exc: BaseException) -> None:
        """The database cannot take these outcomes now. Sent mail must not be sent again at
        lease expiry: keep them (their jobs wait, so no new claims come while any are held:
        the list is bounded by the jobs in hand) and try again with backoff."""
        if not self._held and not self._held_since:
            self._held_since = time.monotonic()
            log.error("cannot record delivery outcomes (%s); %d kept in memory and retried until the database "
                      "is back; no new deliveries start meanwhile", exc, len(batch))
        first = not self._held
        self._held.extend(batch)
        if first:
            self._held_delay = min(max(0.25, 2 * self._held_delay), HELD_RETRY_MAX)
            asyncio.get_running_loop().call_later(self._held_delay, self._retry_held)

    def _database_back(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer saw the database answer again (a heartbeat, a webhook claim): held
        outcomes are written now, not at their next backoff step (up to HELD_RETRY_MAX later),
        and claiming goes on. Called on the writer's thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping
            loop.call_soon_threadsafe(self._retry_held)

    def _held_take(self) -> list[_Finished]:
        batch, self._held = self._held, []
        return batch

    def _retry_held(self) -> None:
        if self._held:
            self._flush_outcomes(self._held_take())
            self._wake.set()  # claims wait while outcomes are held: look again once they are in

    async def _capture(self, claim: Claim) -> None:
        """A sandbox account's message: signed exactly as for delivery, then kept, never sent
        (no route lookup, no connection). Captures of one loop iteration are written together."""
        msg = claim.message
        try:
            left: list[str] = []
            data = fit_lines(msg.data, left=left)
            if has_long_line(data):  # as _deliver says it
                log.warning("%s: lines over 998 octets remain after re-encoding (%s)", msg.id,
                            "; ".join(left) or "reason unknown", extra={"queue_id": msg.id, "account": msg.account})
            signature = self.signer(msg.account_id, data) if self.signer is not None else b""
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if not self._captured:
                asyncio.get_running_loop().call_soon(self._flush_captures)
            self._captured.append((claim, signature, fut))
            await fut
        except Exception as exc:  # the lease runs out and the message is captured later
            log.warning("could not capture sandbox message %s: %s", msg.id, exc,
                        extra={"queue_id": msg.id, "account": msg.account})
            return
        for r in claim.recipients:
            log.info("%s: to=<%s> status=captured (sandbox%s)", msg.id, r.address, ", signed" if signature else "",
                     extra={"queue_id": msg.id, "account": msg.account, "event": "captured",
                            "recipient": r.address})

    def _flush_captures(self) -> None:
        batch, self._captured = self._captured, []
        op = functools.partial(record_captures, items=[(c, s) for c, s, _ in batch], now=time.time())

        def written(done: asyncio.Future[None]) -> None:
            exc = done.exception()
            for _, _, fut in batch:
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)

        self.writer.run(op).add_done_callback(written)

    async def _deliver(self, claim: Claim) -> list[RecipientOutcome]:
        s = self.settings
        try:
            plan = await self.routes.plan(claim.domain)
        except RoutingError as exc:
            verdict = Verdict("bounced" if exc.permanent else "deferred", exc.status, exc.text, remote=False)
            return [RecipientOutcome(r, verdict) for r in claim.recipients]
        left: list[str] = []
        data = fit_lines(claim.message.data, left=left)
        if has_long_line(data):  # many receivers refuse such a line ("500 Line too long")
            log.warning("%s: lines over 998 octets remain after re-encoding (%s)", claim.message.id,
                        "; ".join(left) or "reason unknown",
                        extra={"queue_id": claim.message.id, "account": claim.message.account})
        if self.signer is not None:
            data = self.signer(claim.message.account_id, data) + data
        addresses = [r.address for r in claim.recipients]
        last: Verdict = Verdict("deferred", "4.4.1", f"no server for {claim.domain} could be reached", remote=False)
        last_where: tuple[str | None, str | None] = (None, None)
        for hop in plan.hops:
            for ip in hop.ips:
                conn = self.pool.take(hop, ip)
                if conn is None:
                    try:
                        conn = await connect(hop, ip, helo=self.hostname, source_address=s.source_address,
                                             connect_timeout=s.connect_timeout, command_timeout=s.command_timeout)
                    except HostFailed as exc:
                        last, last_where = exc.verdict, (hop.host, ip)
                        continue
                if self._stopping:  # the last moment to give the recipients back unsent
                    await conn.close()
                    raise Interrupted
                task = asyncio.current_task()
                assert task is not None
                self._sending.add(task)  # from here on stop() lets the job finish and record
                result = await send(conn, sender=claim.message.mail_from, recipients=addresses, data=data)
                if result.reusable and not self._stopping:
                    self.pool.put(conn)
                else:
                    await conn.close()
                return self._outcomes(claim, result)
        return [RecipientOutcome(r, last, last_where[0], last_where[1]) for r in claim.recipients]

    @staticmethod
    def _outcomes(claim: Claim, result: TransactionResult) -> list[RecipientOutcome]:
        return [RecipientOutcome(r, result.verdicts[r.address], result.host, result.ip, result.tls)
                for r in claim.recipients]


def _count(claim: Claim, outcomes: list[RecipientOutcome], max_lifetime: float) -> None:
    """Recorded outcomes into the metrics; for a 250, the time since the message was accepted.
    A failure of a message past its lifetime is recorded as expired (outcomes.record_many)."""
    plan = claim.message.plan
    now = time.time()
    for out in outcomes:
        outcome: str = out.verdict.outcome
        if outcome == "deferred" and expired(claim.message.created_at, now, max_lifetime):
            outcome = "expired"
        metrics.count(metrics.recipients, outcome, plan, provider_of(out.host))
        if outcome == "delivered":
            metrics.observe(metrics.delivery_seconds, max(0.0, now - claim.message.created_at), plan)
