"""Three nodes on one PostgreSQL database, through a failing MX, a node killed and the database
crashed: every message answered 250/202 is delivered, duplicates only where the killed node
had work in hand, usage counted exactly, nothing left leased or pending.

The scenario (and every check) is tests/support/cluster.py's, which bench/cluster.py runs at
soak size; here it is small (300 messages of three recipients, about 10 s of load). The
database is a server of the test's own (tests/support/pgserver.py): the suite's shared one
serves the other tests meanwhile and must not crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.delivery.conftest import Behaviour, RemoteMX
from tests.support.cluster import (
    ACCOUNT,
    API_ACCOUNT,
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
from tests.support.pgserver import PrivatePostgres


class RecordingMX:
    """A loopback aiosmtpd MX as the scenario sees it."""

    def __init__(self, mx: RemoteMX) -> None:
        self.mx = mx

    def deliveries(self) -> list[tuple[str | None, list[str]]]:
        return [(trace_queue_id(m.data), list(m.rcpt_tos)) for m in list(self.mx.messages)]

    def fail(self, on: bool) -> None:
        self.mx.handler.behaviour.tempfail = on


@pytest.mark.timeout(600)
def test_three_nodes_lose_nothing_through_a_failing_mx_a_killed_node_and_a_database_crash(
        tmp_path: Path, private_pg: PrivatePostgres, fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    mxes = {}
    for i, domain in enumerate(DOMAINS):
        ip = f"127.0.0.{i + 2}"
        fake_dns.mx(domain, (10, f"mx.{domain}"))
        fake_dns.a(f"mx.{domain}", ip)
        # A 0.1 s answer to DATA: the nodes always have transactions in flight to kill.
        mxes[domain] = RecordingMX(remote_mx(ip, Behaviour(data_delay=0.1)))
    cluster = Cluster(tmp_path, private_pg.url, loopback_world(fake_dns.address, mx_port))
    db = Database(private_pg.url)
    scenario = Scenario()
    try:
        cluster.start()
        outcome = Run(cluster, db, list(mxes.values()), mxes[FAILING], scenario, crash=private_pg.crash,
                      start_db=private_pg.start, log=print).run()
    finally:
        cluster.stop()
        db.close()
    summary = outcome.summary()
    print(f"initdb {private_pg.init_seconds:.2f} s, starts {private_pg.start_seconds}, "
          f"nodes {cluster.start_seconds:.1f} s\n{json.dumps(summary, indent=2)}")
    problems = outcome.problems()
    assert outcome.accepted and not outcome.lost, problems
    # Delivered twice: only recipients the killed node leased at the kill, at most once more.
    assert set(outcome.duplicates) <= outcome.at_risk, problems
    assert sum(outcome.duplicates.values()) <= len(outcome.at_risk), problems
    # Counted with the message (API account): exact. Counted at RCPT (SMTP account): exact
    # but for reservations of transactions the kill cut short.
    api, smtp = outcome.usage[API_ACCOUNT], outcome.usage[ACCOUNT]
    assert api.day == api.month == api.stored, problems
    assert smtp.stored <= smtp.day == smtp.month <= smtp.stored + outcome.outstanding_at_kill, problems
    assert not outcome.leased and not outcome.not_final, problems
    assert any(address.endswith("@" + FAILING) for _, address in outcome.deferred), problems
    assert all(status == "delivered" and attempts > 1 for status, attempts in outcome.deferred.values()), problems
    assert not problems

