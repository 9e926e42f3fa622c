#!/usr/bin/env python3
"""cluster - three nodes on one PostgreSQL through a failing MX, a killed node and a database crash,
at soak size: is anything lost, how many duplicates against their bound, how fast does it recover?

  bench/cluster.py [-n 10000] [--rate 100] [--smtp-clients 12] [--api-clients 3] [--api-every 5]
                   [--data-delay 0.05] [--keep]

The scenario and every check are the cluster test's (tests/support/cluster.py; the test runs
it with 300 messages): N messages of three recipients (one at each of three loopback MXes,
127.0.0.2-4, found through a loopback DNS server), offered over SMTP to every node in turn and
every --api-every-th through /v3/mail/send. At 10% of the messages the third MX answers 451
for a while; at 30% the database server crashes (every PostgreSQL process SIGKILLed, then
started: crash recovery); at 55% node 1 is SIGKILLed with its workers and started again. The
database is a private PostgreSQL server in the scratch folder (initdb; the machine's own is
never crashed), so PostgreSQL's server programs must be installed.

Printed: the summary (accepted, delivered, duplicates and their bound: the recipients the
killed node held leased at the kill, usage counters against stored recipients, recipients left
leased or pending, each fault's length and the time until the mail accepted before it was
delivered) and every broken promise. Saved to bench/results/cluster-<UTC time>.json.
Every server is on 127.0.0.0/8 and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchkit import REPO, BenchError, machine, run_script, save_json

sys.path.insert(0, str(REPO))  # the scenario lives with the tests
# tests/support/ports.py gives each pytest worker a block of ports: this run takes the last
# one, so that it can run beside `make test` (which uses the first blocks).
os.environ.setdefault("PYTEST_XDIST_WORKER", "gw11")

from aiosmtpd.controller import Controller
from tests.support.cluster import (
    DOMAINS,
    FAILING,
    Cluster,
    Database,
    Run,
    Scenario,
    loopback_world,
    trace_queue_id,
)
from tests.support.dnsserver import FakeDNS
from tests.support.pgserver import PrivatePostgres, why_unusable
from tests.support.ports import free_port


class CountingMX:
    """A loopback MX that keeps (queue id, recipients) of each transaction, not the message."""

    def __init__(self, ip: str, port: int, data_delay: float) -> None:
        self.ip, self.port, self.data_delay = ip, port, data_delay
        self._lock = threading.Lock()
        self._got: list[tuple[str | None, list[str]]] = []
        self._failing = False
        self._controller = Controller(self, hostname=ip, port=port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._failing:
            return "451 4.3.0 Temporary local problem, try again"
        await asyncio.sleep(self.data_delay)
        qid = trace_queue_id(envelope.original_content or b"")
        with self._lock:
            self._got.append((qid, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK queued"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def deliveries(self) -> list[tuple[str | None, list[str]]]:
        with self._lock:
            return list(self._got)

    def fail(self, on: bool) -> None:
        self._failing = on


def _port_free_on_every_ip(ips: list[str]) -> int:
    import socket

    for _ in range(100):
        port = free_port()
        try:
            for ip in ips:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise BenchError("no port free on every MX address")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="messages (three recipients each)")
    ap.add_argument("--rate", type=float, default=100.0, help="messages offered a second (0: as fast as taken)")
    ap.add_argument("--smtp-clients", type=int, default=12)
    ap.add_argument("--api-clients", type=int, default=3)
    ap.add_argument("--api-every", type=int, default=5)
    ap.add_argument("--data-delay", type=float, default=0.05, help="seconds each MX takes to answer DATA")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, database)")
    a = ap.parse_args()
    if a.n < 100 or a.rate < 0:
        print("cluster: -n must be 100 or more and --rate not negative", file=sys.stderr)
        return 2
    reason = why_unusable()
    if reason:
        raise BenchError(reason)
    scenario = dataclasses.replace(
        Scenario(), messages=a.n, rate=a.rate, smtp_clients=a.smtp_clients, api_clients=a.api_clients,
        api_every=a.api_every, tempfail_deferred=50, tempfail_seconds=5.0, db_down=5.0, node_down=2.0,
        drain_timeout=max(120.0, a.n / 20), give_up=300.0)
    scratch = Path(tempfile.mkdtemp(prefix="mailrelay-bench-cluster-"))
    print(f"cluster: N={a.n} messages x {len(DOMAINS)} recipients, rate {a.rate:g}/s, "
          f"{a.smtp_clients} SMTP + {a.api_clients} API clients, MX DATA delay {a.data_delay:g} s; scratch {scratch}",
          flush=True)
    ips = [f"127.0.0.{i + 2}" for i in range(len(DOMAINS))]
    mx_port = _port_free_on_every_ip(ips)
    dns = FakeDNS().start()
    mxes = {}
    pg = PrivatePostgres(free_port())
    cluster: Cluster | None = None
    db: Database | None = None
    try:
        for domain, ip in zip(DOMAINS, ips, strict=True):
            dns.mx(domain, (10, f"mx.{domain}"))
            dns.a(f"mx.{domain}", ip)
            mxes[domain] = CountingMX(ip, mx_port, a.data_delay)
            mxes[domain].start()
        pg.init()
        pg.start()
        cluster = Cluster(scratch, pg.url, loopback_world(dns.address, mx_port))
        db = Database(pg.url)
        cluster.start()
        print(f"three nodes ready in {cluster.start_seconds:.1f} s", flush=True)
        t0 = time.monotonic()

        def log(line: str) -> None:
            print(f"{time.monotonic() - t0:7.1f}s  {line}", flush=True)

        outcome = Run(cluster, db, list(mxes.values()), mxes[FAILING], scenario, crash=pg.crash,
                      start_db=pg.start, log=log).run()
    finally:
        if cluster is not None:
            cluster.stop()
        if db is not None:
            db.close()
        pg.close()
        for mx in mxes.values():
            mx.stop()
        dns.stop()
    summary = outcome.summary()
    s = summary
    print(f"\naccepted {s['accepted']:,} of {s['messages']:,} ({s['accepted_smtp']:,} SMTP, {s['accepted_api']:,} "
          f"API; {s['given_up']} given up, {s['in_doubt']} stored without a reply seen)")
    print(f"delivered {s['delivered_distinct']:,} recipients in {s['deliveries']:,} deliveries; lost {s['lost']}; "
          f"duplicates {s['duplicates']} (bound: {s['duplicate_bound']} leased by the killed node at the kill)")
    print(f"usage: SMTP account {s['usage_smtp']}, API account {s['usage_api']}")
    print(f"left leased {s['left_leased']}, not delivered {s['left_pending']}; deferred by the failing MX "
          f"{s['deferred']}, later delivered {s['deferred_then_delivered']}")
    for name, fault in s["faults"].items():
        print(f"fault {name}: {fault}")
    print(f"drain after each fault (s): {s['drain_seconds']}; after the load: {s['drained_after_load_seconds']} s")
    print(f"accept rate: {s['accept_rate_outside_faults']}/s outside faults, {s['accept_rate_during_faults']}/s "
          f"during; load {s['load_seconds']} s (held at gates {s['held_seconds']} s); refusals {s['refusals']}")
    problems = s["problems"]
    print("problems: none" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    path = save_json("cluster", {"machine": machine(), "args": vars(a), "summary": summary})
    print(f"saved {path}")
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    run_script("cluster", main)
