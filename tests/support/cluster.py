"""Three `mailrelay serve` nodes on one PostgreSQL database, under load and faults: the scenario
the cluster test (tests/integration/delivery/test_cluster.py) asserts on and bench/cluster.py
runs at soak size.

Mail: N messages, each to one recipient at each of DOMAINS, offered at a steady rate over SMTP
to every node in turn and, every `api_every`-th, through the HTTP API's /v3/mail/send; a client
refused (4xx, 5xx, a reset, a node gone) tries again at the next node, as an application would.
Meanwhile, one after the other, each when its share of the messages has been offered:

- the last domain's MX answers 451 to every DATA until some recipients were deferred, then
  recovers (their later attempts succeed);
- one node is frozen (SIGSTOP, so what it leases can be read exactly), killed with all its
  processes (SIGKILL), and started again;
- the database server crashes (every PostgreSQL process SIGKILLed) and starts again after a
  pause (crash recovery).

Offering stops at each fault's share until that fault has begun, so every fault meets traffic
however slow the machine. Afterwards `Outcome` holds what was accepted, stored, delivered and
counted, and `problems()` lists every broken promise: a message answered 250/202 and not
delivered to all its recipients, a duplicate delivery of a recipient the killed node did not
lease at the kill (the only ones allowed: a transaction whose 250 came before the kill, its
outcome not yet recorded), usage counters not equal to the recipients stored, a recipient left
leased or pending, one the failing MX deferred not delivered by a later attempt.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import sqlalchemy as sa

from mailrelay.accounts.passwords import generate_password, make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.spool.nodes import owned_by
from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from tests.support.ports import free_port
from tests.support.serve import Server, base_env, write_config

DOMAINS = ("a.test", "b.test", "c.test")  # the last one's MX fails for a while
FAILING = DOMAINS[-1]
# SMTP mail comes from the trusted networks' account, on a plan with a daily limit (never
# reached): its recipients are counted one by one at RCPT, committed before the 250. API mail
# comes from an account without limits: counted in the message's own transaction.
ACCOUNT = "demo"
API_ACCOUNT = "api"
PLAN = "cluster"
PLAN_LIMIT = 100_000_000
SENDER = "app@load.test"
# The Received line a node adds names the queue id (SMTP: "with ESMTP id", API: "with HTTP id").
_TRACE_ID = re.compile(rb"\(mailrelay\) with \w+ id (\w+)")
_QUEUED_AS = re.compile(r"queued as (\w+)")
_LEASED_TO = sa.text("SELECT message_id, address FROM recipients WHERE lease_owner IN :o").bindparams(
    sa.bindparam("o", expanding=True))


def trace_queue_id(data: bytes) -> str | None:
    m = _TRACE_ID.search(data)
    return m.group(1).decode() if m else None


class MX(Protocol):
    """A receiving server of one domain, as the scenario sees it."""

    def deliveries(self) -> list[tuple[str | None, list[str]]]:
        """(queue id from our Received line, recipients) of every transaction answered 250."""
        ...

    def fail(self, on: bool) -> None:
        """Answer every DATA 4xx from now on (True), or accept again (False)."""
        ...


@dataclass(frozen=True, slots=True)
class Scenario:
    messages: int = 300
    smtp_clients: int = 6  # spread over the nodes
    api_clients: int = 2
    api_every: int = 5  # every this-th message goes through the API (0: none)
    rate: float = 40.0  # messages offered a second in all (0: as fast as they are taken)
    size: int = 400  # bytes of body per message
    faults: tuple[str, ...] = ("mx", "crash", "kill")  # which of the three happen
    # The share of the messages offered when each fault begins. The kill comes last: its node
    # restarts while the rest of the mail flows (no later fault waits for it).
    tempfail_at: float = 0.1
    crash_at: float = 0.3
    kill_at: float = 0.55
    tempfail_deferred: int = 10  # the MX fails until this many recipients were deferred ...
    tempfail_seconds: float = 1.0  # ... and at least this long
    node_down: float = 1.0  # seconds between the kill and the restart
    db_down: float = 2.0  # seconds between the crash and the start
    victim: int = 1  # the node killed
    drain_timeout: float = 90.0  # after the last message: until every recipient is final
    give_up: float = 120.0  # a client stops offering one message after this long


@dataclass
class Node:
    index: int
    folder: Path
    config: Path
    smtp_port: int
    http_port: int
    server: Server | None = None
    logs: list[Server] = field(default_factory=list)  # every start, for the log files
    api: bool = True

    def start(self) -> None:
        self.server = Server(self.folder, ["-c", str(self.config), "serve"], base_env(self.folder))
        self.logs.append(self.server)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Taking mail and delivering: the SMTP listener, the API process and the delivery
        agent (the parent says "ready" before its child processes have started)."""
        assert self.server is not None
        self.server.wait_ready(timeout)
        deadline = time.monotonic() + timeout
        while True:
            text = self.server.text()
            if ("HTTP API listening" in text or not self.api) and "delivery agent" in text:
                return
            assert self.server.proc.poll() is None and time.monotonic() < deadline, text[-3000:]
            time.sleep(0.05)


def node_toml(http_port: int, delivery: str, *, api: bool = True) -> str:
    """A cluster node's settings besides write_config's: its API (unless not `api`), delivery
    (`delivery`: how to reach the MXes, any other [delivery] keys), short retries, and the SMTP
    account's plan."""
    return f"""
[http]
enabled = {str(api).lower()}
listen = "127.0.0.1:{http_port}"
processes = 1
[smtp]
max_connections_per_ip = 1000
[delivery]
enabled = true
processes = 1
allow_private_destinations = true
max_connections = 20
max_per_domain = 6
retry_first = 0.5
retry_max = 1
heartbeat_seconds = 1
connect_timeout = 3
command_timeout = 20
[plans.{PLAN}]
daily_limit = {PLAN_LIMIT}
{delivery}
"""


def loopback_world(dns_address: str, mx_port: int) -> str:
    """The `delivery` settings of `Cluster` that send every domain's mail through the loopback
    DNS server at `dns_address` to MXes listening on `mx_port`."""
    return f"""
[dns]
nameservers = ["{dns_address}"]
timeout = 2
[delivery]
mx_port = {mx_port}
"""


class Cluster:
    """`count` nodes on `db_url`, each in a folder of its own under `root`."""

    def __init__(self, root: Path, db_url: str, delivery: str, *, count: int = 3, api: bool = True,
                 port: Callable[[], int] = free_port) -> None:
        self.db_url = db_url
        self.nodes: list[Node] = []
        for i in range(count):
            folder = root / f"node{i}"
            folder.mkdir(parents=True, exist_ok=True)
            smtp_port, http_port = port(), port()
            config = write_config(folder, db_url, smtp_port, node_toml(http_port, delivery, api=api))
            self.nodes.append(Node(i, folder, config, smtp_port, http_port, api=api))
        self.api_key = ""
        self.start_seconds = 0.0

    def start(self) -> None:
        """The account and its API key first, here (no node races another to make the demo
        account, and no CLI process pays mailrelay's start-up), then every node at once."""
        t0 = time.monotonic()
        engine = create_engine(self.db_url)
        try:
            migrate.upgrade(engine)
            service = AccountService(engine, make_hasher(fast=True))
            service.create(ACCOUNT, generate_password(), plan=PLAN)
            service.create(API_ACCOUNT, generate_password(), plan="unlimited")
            self.api_key = service.create_key(API_ACCOUNT, "cluster load")[1]
        finally:
            engine.dispose()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM every node (while the database is up) and wait for them."""
        running = [n.server for n in self.nodes if n.server is not None and n.server.proc.poll() is None]
        for server in running:
            _signal_all(process_tree(server.proc.pid), signal.SIGCONT)  # one left frozen by a failure
            server.proc.send_signal(signal.SIGTERM)
        for server in running:
            with contextlib.suppress(Exception):
                server.proc.wait(30)
        for node in self.nodes:
            for server in node.logs:
                server.stop()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parents first."""
    out, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    kids = [int(k) for k in (task / "children").read_text().split()]
                    out += kids
                    todo += kids
    return out


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Database:
    """The test's own reads of the cluster's database, retried through its outage."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, connect_timeout=3)

    def read(self, fn: Callable[[sa.Connection], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.engine.connect() as conn:
                    return fn(conn)
            except sa.exc.OperationalError:
                self.engine.dispose()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.read(lambda conn: conn.execute(sa.text(sql), params).scalar())

    def rows(self, sql: str, **params: Any) -> list[Any]:
        return self.read(lambda conn: conn.execute(sa.text(sql), params).all())

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Accepted:
    token: str  # the Subject: m<number>-<try>
    recipients: list[str]
    via: str  # "smtp" or "api"
    node: int
    at: float  # wall clock
    queue_id: str | None = None  # from the 250 (SMTP); the API's 202 names none


@dataclass
class Fault:
    name: str
    began: float  # wall clock
    ended: float = 0.0  # the MX accepts again / the node is ready / the database accepts connections
    note: dict[str, Any] = field(default_factory=dict)


@dataclass
class Gate:
    """Where the load waits for a fault to begin: before message number `at`."""

    at: int
    opened: threading.Event = field(default_factory=threading.Event)
    held_from: float | None = None  # wall clock: the first client to wait here
    opened_at: float | None = None

    def open(self) -> None:
        self.opened_at = time.time()
        self.opened.set()


class Load:
    """The clients: SMTP and API threads taking message numbers in order, paced, retrying."""

    def __init__(self, cluster: Cluster, s: Scenario) -> None:
        self.cluster = cluster
        self.s = s
        self._lock = threading.Lock()
        self.gates: list[Gate] = []
        self.accepted: list[Accepted] = []
        self.refusals: collections.Counter[str] = collections.Counter()  # what a try met instead
        self.given_up: list[int] = []
        self.t0 = 0.0
        api = {n for n in range(s.messages) if s.api_every and n % s.api_every == s.api_every - 1}
        if not s.api_clients:
            api = set()
        self._queues = {"smtp": collections.deque(n for n in range(s.messages) if n not in api),
                        "api": collections.deque(sorted(api))}
        self.highest = -1  # the highest message number taken
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        # SMTP RCPTs sent in transactions not yet answered at the end of DATA, by node: what a
        # node killed now may have counted against the account without a message stored.
        self.open_rcpts = [0] * len(cluster.nodes)

    def gate(self, share: float) -> Gate:
        gate = Gate(int(share * self.s.messages))
        self.gates.append(gate)
        return gate

    def start(self) -> None:
        self.t0 = time.monotonic()
        kinds = ["smtp"] * self.s.smtp_clients + ["api"] * self.s.api_clients
        for k, kind in enumerate(kinds):
            t = threading.Thread(target=self._client, args=(k, kind), name=f"load-{kind}-{k}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def reached(self, gate: Gate) -> bool:
        """A client has taken the first message number behind `gate`."""
        return self.highest >= gate.at

    def _take(self, kind: str) -> int | None:
        """The next message number for a client of `kind`, in order."""
        with self._lock:
            if not self._queues[kind]:
                return None
            n = self._queues[kind].popleft()
            self.highest = max(self.highest, n)
            return n

    def _wait_turn(self, n: int) -> None:
        for gate in self.gates:
            if n >= gate.at and not gate.opened.is_set():
                with self._lock:
                    if gate.held_from is None:
                        gate.held_from = time.time()
                gate.opened.wait()
        if self.s.rate:
            delay = self.t0 + n / self.s.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _client(self, k: int, kind: str) -> None:
        try:
            if kind == "smtp":
                self._smtp_client(k)
            else:
                self._api_client(k)
        except BaseException as exc:  # reported by the scenario, not lost in a thread
            self.errors.append(exc)

    def recipients(self, n: int) -> list[str]:
        return [f"u{n}@{d}" for d in DOMAINS]

    def _body(self, token: str, rcpts: list[str]) -> bytes:
        head = (f"From: <{SENDER}>\r\nTo: {', '.join(rcpts)}\r\nSubject: {token}\r\n"
                f"Message-ID: <{token}@load.test>\r\n\r\n")
        return head.encode() + (b"x" * 76 + b"\r\n") * max(1, self.s.size // 78)

    def _smtp_client(self, k: int) -> None:
        nodes = self.cluster.nodes
        at = k % len(nodes)
        conn: smtplib.SMTP | None = None
        while (n := self._take("smtp")) is not None:
            self._wait_turn(n)
            rcpts = self.recipients(n)
            began = time.monotonic()
            tries = 0
            while True:
                token = f"m{n}-{tries}"
                outcome = "?"
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", nodes[at].smtp_port, timeout=30)
                        conn.ehlo("load.test")
                    outcome = self._transaction(conn, at, rcpts, self._body(token, rcpts))
                except (OSError, smtplib.SMTPException) as exc:
                    outcome = type(exc).__name__
                if outcome.startswith("queued as "):
                    with self._lock:
                        self.accepted.append(Accepted(token, rcpts, "smtp", at, time.time(), outcome.split()[-1]))
                    break
                with self._lock:
                    self.refusals[f"smtp {outcome}"] += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
                tries += 1
                at = (at + 1) % len(nodes)
                if time.monotonic() - began > self.s.give_up:
                    self.given_up.append(n)
                    break
                time.sleep(0.2)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.quit()

    def _transaction(self, conn: smtplib.SMTP, node: int, rcpts: list[str], body: bytes) -> str:
        """One message; "queued as ID" or the first reply that was not a 2xx (e.g. "DATA 451")."""
        code, text = conn.mail(SENDER)
        if code != 250:
            return f"MAIL {code}"
        sent = 0
        try:
            for rcpt in rcpts:
                with self._lock:
                    self.open_rcpts[node] += 1
                sent += 1
                code, text = conn.rcpt(rcpt)
                if code != 250:
                    return f"RCPT {code}"
            code, text = conn.data(body)
        finally:
            with self._lock:
                self.open_rcpts[node] -= sent
        if code != 250:
            return f"DATA {code}"
        m = _QUEUED_AS.search(text.decode(errors="replace"))
        return f"queued as {m.group(1)}" if m else f"DATA {code} without a queue id"

    def _api_client(self, k: int) -> None:
        nodes = self.cluster.nodes
        at = k % len(nodes)
        auth = {"Authorization": f"Bearer {self.cluster.api_key}"}
        with httpx.Client(timeout=30, trust_env=False, headers=auth) as client:
            while (n := self._take("api")) is not None:
                self._wait_turn(n)
                rcpts = self.recipients(n)
                began = time.monotonic()
                tries = 0
                while True:
                    token = f"m{n}-{tries}"
                    doc = {"personalizations": [{"to": [{"email": r} for r in rcpts]}],
                           "from": {"email": SENDER}, "subject": token,
                           "content": [{"type": "text/plain", "value": "x" * self.s.size}]}
                    try:
                        r = client.post(f"http://127.0.0.1:{nodes[at].http_port}/v3/mail/send", json=doc)
                        outcome = str(r.status_code)
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    if outcome == "202":
                        with self._lock:
                            self.accepted.append(Accepted(token, rcpts, "api", at, time.time()))
                        break
                    with self._lock:
                        self.refusals[f"api {outcome}"] += 1
                    tries += 1
                    at = (at + 1) % len(nodes)
                    if time.monotonic() - began > self.s.give_up:
                        self.given_up.append(n)
                        break
                    time.sleep(0.2)



@dataclass
class Usage:
    """One account's usage counters against the recipients stored for it."""

    stored: int  # recipients of its messages in the database
    day: int  # its counters, summed over the periods
    month: int


@dataclass
class Outcome:
    """What the run did, and what the database and the MXes say afterwards."""

    scenario: Scenario
    accepted: list[Accepted]
    refusals: dict[str, int]
    given_up: int
    faults: list[Fault]
    held: list[tuple[float, float]]  # wall-clock spans the load waited at a gate for a fault to begin
    stored: dict[str, str]  # token (Subject) -> queue id, every message sent in the database
    usage: dict[str, Usage]  # by account
    outstanding_at_kill: int  # the SMTP account's usage minus its stored recipients at the kill
    not_final: list[tuple[str, str, str]]  # (queue id, address, status) not delivered
    leased: list[tuple[str, str, str]]  # (queue id, address, lease owner) still leased
    deferred: dict[tuple[str, str], tuple[str, int]]  # (queue id, address) deferred once -> (status, attempts)
    deliveries: collections.Counter[tuple[str | None, str]]  # (queue id, address) -> times the MXes took it
    at_risk: set[tuple[str, str]]  # (queue id, address) leased by the killed node at the kill
    drain: dict[str, float]  # fault -> seconds from its end until all mail accepted before then was delivered
    load_seconds: float
    errors: list[str]
    drained_after_load: float = 0.0  # seconds from the last message accepted until every recipient was final

    @property
    def lost(self) -> list[tuple[str, str]]:
        """(token, address) accepted and not delivered."""
        out = []
        for a in self.accepted:
            qid = self.stored.get(a.token)
            out += [(a.token, r) for r in a.recipients if qid is None or self.deliveries[(qid, r)] == 0]
        return out

    @property
    def duplicates(self) -> dict[tuple[str | None, str], int]:
        """(queue id, address) -> deliveries past the first."""
        return {k: n - 1 for k, n in self.deliveries.items() if n > 1}

    @property
    def in_doubt(self) -> int:
        """Messages stored whose client got no 250/202 (the reply lost to the kill or the crash)."""
        return len(set(self.stored) - {a.token for a in self.accepted})

    def accept_rates(self, step: float = 0.1) -> tuple[float, float]:
        """Messages accepted a second while a fault lasted, and outside the faults (the spans
        the load waited at a gate left out of both)."""
        if not self.accepted:
            return 0.0, 0.0
        start = min(a.at for a in self.accepted)
        slices = int((max(a.at for a in self.accepted) - start) / step) + 1
        kind = []
        for i in range(slices):
            t = start + (i + 0.5) * step
            kind.append("held" if any(b <= t < e for b, e in self.held)
                        else "fault" if any(f.began <= t < f.ended for f in self.faults) else "normal")
        counts = collections.Counter(kind[min(slices - 1, int((a.at - start) / step))] for a in self.accepted)
        seconds = collections.Counter(kind)
        return (counts["fault"] / max(step, seconds["fault"] * step),
                counts["normal"] / max(step, seconds["normal"] * step))

    def problems(self) -> list[str]:
        out = list(self.errors)
        lost = self.lost
        if lost:
            out.append(f"{len(lost)} accepted recipients not delivered, e.g. {lost[:5]}")
        missing = [a.token for a in self.accepted if a.token not in self.stored]
        if missing:
            out.append(f"{len(missing)} accepted messages not in the database, e.g. {missing[:5]}")
        wrong_id = [a.token for a in self.accepted if a.queue_id and self.stored.get(a.token) not in (None, a.queue_id)]
        if wrong_id:
            out.append(f"{len(wrong_id)} messages stored under another queue id than their 250 said: {wrong_id[:5]}")
        beyond = {k: n for k, n in self.duplicates.items() if k not in self.at_risk}
        if beyond:
            out.append(f"{len(beyond)} recipients delivered twice that the killed node did not lease at the kill: "
                       f"{sorted(beyond.items(), key=str)[:5]}")
        stored_ids = set(self.stored.values())
        unknown = [k for k in self.deliveries if k[0] not in stored_ids]
        if unknown:
            out.append(f"{len(unknown)} deliveries of no stored message, e.g. {unknown[:5]}")
        api = self.usage[API_ACCOUNT]
        if not api.day == api.month == api.stored:
            out.append(f"account {API_ACCOUNT} (counted with its messages): usage {api.day} (day) / {api.month} "
                       f"(month) for {api.stored} recipients stored")
        smtp = self.usage[ACCOUNT]
        if not smtp.stored <= smtp.day == smtp.month <= smtp.stored + self.outstanding_at_kill:
            out.append(f"account {ACCOUNT} (counted at RCPT): usage {smtp.day} (day) / {smtp.month} (month) for "
                       f"{smtp.stored} recipients stored; at most {self.outstanding_at_kill} more may stay "
                       "counted (reserved on the killed node, or in flight elsewhere, at the kill)")
        if self.not_final:
            out.append(f"{len(self.not_final)} recipients not delivered in the database, e.g. {self.not_final[:5]}")
        if self.leased:
            out.append(f"{len(self.leased)} recipients still leased, e.g. {self.leased[:5]}")
        if "mx" in self.scenario.faults and not any(a.endswith("@" + FAILING) for _, a in self.deferred):
            out.append(f"the failing MX ({FAILING}) deferred no recipient")
        bad = {k: v for k, v in self.deferred.items() if v[0] != "delivered" or v[1] < 2}
        if bad:
            out.append(f"{len(bad)} deferred recipients not delivered by a later attempt: {sorted(bad.items())[:5]}")
        return out

    def summary(self) -> dict[str, Any]:
        during, outside = self.accept_rates()
        smtp, api = self.usage[ACCOUNT], self.usage[API_ACCOUNT]
        return {
            "messages": self.scenario.messages,
            "accepted": len(self.accepted),
            "accepted_smtp": sum(1 for a in self.accepted if a.via == "smtp"),
            "accepted_api": sum(1 for a in self.accepted if a.via == "api"),
            "accepted_recipients": sum(len(a.recipients) for a in self.accepted),
            "given_up": self.given_up,
            "stored_messages": len(self.stored),
            "in_doubt": self.in_doubt,
            "delivered_distinct": sum(1 for n in self.deliveries.values() if n),
            "deliveries": sum(self.deliveries.values()),
            "lost": len(self.lost),
            "duplicates": sum(self.duplicates.values()),
            "duplicate_bound": len(self.at_risk),
            "usage_smtp": {"stored": smtp.stored, "day": smtp.day, "month": smtp.month,
                           "outstanding_at_kill": self.outstanding_at_kill},
            "usage_api": {"stored": api.stored, "day": api.day, "month": api.month},
            "left_leased": len(self.leased),
            "left_pending": len(self.not_final),
            "deferred": len(self.deferred),
            "deferred_then_delivered": sum(1 for v in self.deferred.values() if v[0] == "delivered" and v[1] > 1),
            "faults": {f.name: {"seconds": round(f.ended - f.began, 2), **f.note} for f in self.faults},
            "drain_seconds": {k: round(v, 2) for k, v in self.drain.items()},
            "accept_rate_during_faults": round(during, 1),
            "accept_rate_outside_faults": round(outside, 1),
            "load_seconds": round(self.load_seconds, 1),
            "drained_after_load_seconds": round(self.drained_after_load, 1),
            "held_seconds": round(sum(e - b for b, e in self.held), 1),
            "refusals": dict(self.refusals),
            "problems": self.problems(),
        }


class Run:
    """One run of the scenario: `run()` drives the load and the faults and returns the Outcome."""

    def __init__(self, cluster: Cluster, db: Database, mxes: list[MX], failing: MX, s: Scenario, *,
                 crash: Callable[[], None], start_db: Callable[[], float],
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.cluster = cluster
        self.db = db
        self.mxes = mxes
        self.failing = failing
        self.s = s
        self.crash = crash
        self.start_db = start_db
        self.log = log
        self.faults: list[Fault] = []
        self.at_risk: set[tuple[str, str]] = set()
        self.outstanding_at_kill = 0

    def run(self) -> Outcome:
        s = self.s
        load = Load(self.cluster, s)
        steps = sorted([(share, fault) for name, share, fault in (
            ("mx", s.tempfail_at, self._tempfail), ("kill", s.kill_at, self._kill), ("crash", s.crash_at, self._crash))
            if name in s.faults], key=lambda step: step[0])
        gates = [(load.gate(share), fault) for share, fault in steps]
        load.start()
        for gate, fault in gates:
            while not load.reached(gate) and not load.errors:
                if load.join(0.02):  # every client done (none can be before the last gate)
                    break
            fault(gate, load)
        finished = load.join(timeout=s.give_up + 60)
        load_seconds = time.monotonic() - load.t0
        self.log(f"load done in {load_seconds:.1f} s: {len(load.accepted)} accepted")
        errors = [repr(e) for e in load.errors] + ([] if finished else ["the load did not finish"])
        t0 = time.monotonic()
        self._drain(s.drain_timeout)
        drained = time.monotonic() - t0
        time.sleep(1.0)  # a duplicate on its way comes now
        held = [(g.held_from, g.opened_at) for g, _ in gates if g.held_from is not None and g.opened_at is not None]
        outcome = self._outcome(load, load_seconds, held, errors)
        outcome.drained_after_load = drained
        return outcome

    # -- the faults --------------------------------------------------------------------------

    def _tempfail(self, gate: Gate, load: Load) -> None:
        self.failing.fail(True)
        fault = Fault("mx 4xx", time.time())
        self.faults.append(fault)
        gate.open()
        t0 = time.monotonic()
        deadline = t0 + 60
        while time.monotonic() < deadline:
            n = self._deferred_count()
            if n >= self.s.tempfail_deferred and time.monotonic() - t0 >= self.s.tempfail_seconds:
                break
            time.sleep(0.1)
        self.failing.fail(False)
        fault.ended = time.time()
        fault.note["deferred"] = self._deferred_count()
        self.log(f"MX of {FAILING} answered 4xx for {fault.ended - fault.began:.1f} s")

    def _deferred_count(self) -> int:
        return int(self.db.scalar(
            "SELECT count(DISTINCT a.recipient_id) FROM attempts a JOIN recipients r ON r.id = a.recipient_id"
            " WHERE r.domain = :d AND a.outcome = 'deferred'", d=FAILING))

    def _kill(self, gate: Gate, load: Load) -> None:
        victim = self.cluster.nodes[self.s.victim]
        assert victim.server is not None
        gate.open()
        # Every node frozen, the database stands still and can be read exactly: what the
        # victim leases (the only recipients it can have sent without recording it), and how
        # many recipients are counted against the SMTP account without a message stored yet
        # (reservations of transactions in flight: those on the victim stay counted). Thawed
        # and frozen again until the victim holds some work (it nearly always does).
        deadline = time.monotonic() + 30
        while True:
            trees = self._freeze()
            at_risk, outstanding, owners = self._at_kill(trees[self.s.victim])
            if at_risk or time.monotonic() > deadline:
                break
            self._thaw(trees)
            time.sleep(0.05)
        _signal_all(trees[self.s.victim], signal.SIGKILL)
        fault = Fault("node kill", time.time(), note={"leased_at_kill": len(at_risk),
                                                      "outstanding_reservations_at_kill": outstanding,
                                                      "open_smtp_rcpts_on_victim": load.open_rcpts[self.s.victim]})
        self.faults.append(fault)
        self._thaw([t for i, t in enumerate(trees) if i != self.s.victim])
        self.at_risk, self.outstanding_at_kill = at_risk, outstanding
        victim.server.proc.wait(30)
        self.log(f"node {victim.index} killed holding {len(at_risk)} leased recipients")
        # The other nodes find its processes gone (same machine) at their next heartbeat and
        # hand its leases back; after 30 s the restart would do it.
        t0 = time.monotonic()
        while owners and self._leased_to(owners) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        if owners and not self._leased_to(owners):
            fault.note["handed_back_after"] = round(time.monotonic() - t0, 2)
        time.sleep(max(0.0, self.s.node_down - (time.monotonic() - t0)))
        t0 = time.monotonic()
        victim.start()
        victim.wait_ready()
        fault.ended = time.time()
        fault.note["restart_seconds"] = round(time.monotonic() - t0, 2)
        self.log(f"node {victim.index} ready again after {fault.ended - fault.began:.1f} s")

    def _freeze(self) -> list[list[int]]:
        trees = []
        for node in self.cluster.nodes:
            assert node.server is not None
            pids = process_tree(node.server.proc.pid)
            _signal_all(pids, signal.SIGSTOP)
            more = [p for p in process_tree(node.server.proc.pid) if p not in pids]  # started meanwhile
            _signal_all(more, signal.SIGSTOP)
            trees.append(pids + more)
        return trees

    def _thaw(self, trees: list[list[int]]) -> None:
        for pids in trees:
            _signal_all(pids, signal.SIGCONT)

    def _at_kill(self, victim: list[int]) -> tuple[set[tuple[str, str]], int, list[str]]:
        """What the victim leases, the SMTP account's reservations without a stored message,
        and the victim's lease owner names."""
        def read(conn: sa.Connection) -> tuple[set[tuple[str, str]], int, list[str]]:
            names = [r.name for r in conn.execute(sa.text("SELECT name, pid FROM nodes")) if r.pid in victim]
            owners = owned_by(names)
            at_risk: set[tuple[str, str]] = set()
            if owners:
                rows = conn.execute(_LEASED_TO, {"o": owners})
                at_risk = {(r.message_id, r.address) for r in rows}
            usage = _usage(conn, ACCOUNT)
            return at_risk, max(usage.day, usage.month) - usage.stored, owners
        result: tuple[set[tuple[str, str]], int, list[str]] = self.db.read(read)
        return result

    def _leased_to(self, owners: list[str]) -> bool:
        return bool(self.db.read(lambda conn: conn.execute(_LEASED_TO, {"o": owners}).first()))

    def _crash(self, gate: Gate, load: Load) -> None:
        # While the load waits at its gate: no new mail commits (whose WAL flush would carry
        # the workers' along), only the workers' claims and outcomes are in flight.
        self.crash()
        gate.open()
        fault = Fault("database crash", time.time())
        self.faults.append(fault)
        self.log("database crashed")
        time.sleep(self.s.db_down)
        fault.note["start_seconds"] = round(self.start_db(), 2)
        fault.ended = time.time()
        self.log(f"database back after {fault.ended - fault.began:.1f} s")

    # -- afterwards --------------------------------------------------------------------------

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = self.db.scalar("SELECT count(*) FROM recipients WHERE status IN ('queued', 'deferred')"
                                  " OR lease_owner IS NOT NULL")
            if busy == 0:
                return
            time.sleep(0.2)
        self.log(f"not drained after {timeout:.0f} s")

    def _outcome(self, load: Load, load_seconds: float, held: list[tuple[float, float]],
                 errors: list[str]) -> Outcome:
        db = self.db
        stored = {r.subject: r.id for r in db.rows("SELECT id, subject FROM messages WHERE direction = 'out'"
                                                   " AND mail_from = :s", s=SENDER)}
        created = {r.id: r.created_at for r in db.rows("SELECT id, created_at FROM messages")}
        rows = db.rows("SELECT id, message_id, address, status, attempts, lease_owner, updated_at FROM recipients")
        deferred_ids = {r.recipient_id for r in db.rows(
            "SELECT DISTINCT recipient_id FROM attempts WHERE outcome = 'deferred'")}
        usage = {name: db.read(lambda conn, name=name: _usage(conn, name)) for name in (ACCOUNT, API_ACCOUNT)}
        deliveries: collections.Counter[tuple[str | None, str]] = collections.Counter()
        for mx in self.mxes:
            for qid, rcpts in mx.deliveries():
                for rcpt in rcpts:
                    deliveries[(qid, rcpt)] += 1
        drain = {}
        for f in self.faults:
            before = [r.updated_at for r in rows if created.get(r.message_id, 0) <= f.ended]
            drain[f.name] = max(0.0, max(before, default=f.ended) - f.ended)
            if f.name == "database crash":  # until a node took a message again
                after = [a.at - f.ended for a in load.accepted if a.at >= f.ended]
                f.note["first_accept_after"] = round(min(after), 2) if after else None
            if f.name == "node kill":  # until the last recipient it had in hand was delivered
                taken = [r.updated_at for r in rows if (r.message_id, r.address) in self.at_risk]
                f.note["its_work_delivered_after"] = round(max(taken, default=f.began) - f.began, 2)
        return Outcome(
            scenario=self.s, accepted=load.accepted, refusals=dict(load.refusals), given_up=len(load.given_up),
            faults=self.faults, held=held, stored=stored, usage=usage, outstanding_at_kill=self.outstanding_at_kill,
            not_final=[(r.message_id, r.address, r.status) for r in rows if r.status != "delivered"],
            leased=[(r.message_id, r.address, r.lease_owner) for r in rows if r.lease_owner is not None],
            deferred={(r.message_id, r.address): (r.status, int(r.attempts)) for r in rows if r.id in deferred_ids},
            deliveries=deliveries, at_risk=self.at_risk, drain=drain, load_seconds=load_seconds, errors=errors)


def _usage(conn: sa.Connection, account: str) -> Usage:
    """The account's counters (all periods) and the recipients of its messages."""
    counts = dict(conn.execute(sa.text(
        "SELECT substr(u.period, 1, 1), sum(u.count) FROM usage u JOIN accounts a ON a.id = u.account_id"
        " WHERE a.name = :n GROUP BY 1"), {"n": account}).all())
    stored = conn.execute(sa.text(
        "SELECT count(*) FROM recipients r JOIN messages m ON m.id = r.message_id JOIN accounts a"
        " ON a.id = m.account_id WHERE a.name = :n AND m.direction = 'out'"), {"n": account}).scalar()
    return Usage(int(stored or 0), int(counts.get("D") or 0), int(counts.get("M") or 0))
