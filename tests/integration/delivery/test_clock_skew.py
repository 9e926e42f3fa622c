"""Nodes whose clocks disagree share one PostgreSQL queue on the database's clock (store.clock):
mail queued by a node ahead is due at once elsewhere, a node ahead neither retries early nor
takes over a lease early, and no node takes another for dead."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from mailrelay.delivery.agent import DeliveryAgent
from mailrelay.resolver.dnspython import DNSResolver
from mailrelay.settings import DeliverySettings
from mailrelay.spool import nodes
from mailrelay.spool.leases import claim_due
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store.clock import DatabaseClock
from mailrelay.store.schema import accounts, recipients
from tests.support.dnsserver import FakeDNS

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
SKEW = 120.0


def _ahead() -> float:
    return time.time() + SKEW


def _record(queue_id: str, account_id: int, created_at: float) -> SpoolRecord:
    return SpoolRecord(queue_id=queue_id, account_id=account_id, mail_from="app@example.net", mail_params={},
                       recipients=[(f"{queue_id.lower()}@dest.test", {})], client_ip="127.0.0.1", helo="client",
                       auth_user=None, tls_version=None, tls_cipher=None, listener="smtp", trace_headers=b"",
                       body=b"Subject: skew\r\n\r\nbody\r\n", created_at=created_at)


def _account(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(name="alice", password_hash="x", created_at=0, updated_at=0)
                                .returning(accounts.c.id)).scalar_one())


def test_mail_queued_by_a_node_ahead_is_due_at_once_and_a_retry_is_not_early(engine: sa.Engine) -> None:
    account = _account(engine)
    ahead = SpoolWriter(engine, clock=DatabaseClock("postgresql", local=_ahead))
    right = DatabaseClock("postgresql")

    async def enqueue() -> None:
        ahead.start(asyncio.get_running_loop())
        await ahead.submit(_record("NEW", account, _ahead()), None)  # SMTP stamps its own clock
        ahead.stop()

    asyncio.run(enqueue())
    with engine.begin() as conn:
        right.sync(conn)
        assert abs(ahead.now() - right.now()) < 1.0
        taken = claim_due(conn, node="right", now=right.now(), limit=10, lease_seconds=900,
                          next_attempt=lambda n: 60.0)
        assert [c.message.id for c in taken] == ["NEW"]  # not 120 s later
        # Deferred for 60 s: the node ahead does not try again now.
        conn.execute(recipients.update().values(lease_owner=None, lease_until=None, status="deferred"))
        assert claim_due(conn, node="ahead", now=ahead.now(), limit=10, lease_seconds=900,
                         next_attempt=lambda n: 60.0) == []


def test_a_node_ahead_takes_no_lease_early_and_buries_nobody_alive(engine: sa.Engine, fake_dns: FakeDNS,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    account = _account(engine)
    writers = [SpoolWriter(engine, clock=DatabaseClock("postgresql")),
               SpoolWriter(engine, clock=DatabaseClock("postgresql", local=_ahead))]
    settings = DeliverySettings(heartbeat_seconds=0.1, dead_after=1.0, poll_seconds=0.1)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for w in writers:
            w.start(loop)
        await writers[0].submit_many([_record("LIVE", account, time.time()), _record("GONE", account, time.time())],
                                     None)
        db_now = await writers[0].run(lambda conn: float(conn.exec_driver_sql(
            "SELECT extract(epoch FROM clock_timestamp())").scalar_one()))
        def lease(conn: sa.Connection) -> None:
            # LIVE is being delivered by the node that is right; GONE was leased by a process
            # without a heartbeat row; both due again (and GONE's lease over) in 60 s by the
            # database's clock, which is now to the node ahead by its own.
            for queue_id, owner in (("LIVE", "right"), ("GONE", "gone-node")):
                conn.execute(recipients.update().where(recipients.c.message_id == queue_id).values(
                    lease_owner=owner, lease_until=db_now + 60, next_attempt_at=db_now + 60, attempts=1))

        await writers[0].run(lease)
        agents = [DeliveryAgent(settings=settings, writer=w, resolver=DNSResolver([fake_dns.address], 1.0),
                                hostname="relay.test", node=name)
                  for w, name in zip(writers, ("right", "ahead"), strict=True)]
        for agent in agents:
            await agent.start()
        await asyncio.sleep(2.0)  # twice dead_after, twenty beats, twenty claims each
        alive = await writers[0].run(nodes.heartbeats)
        held = await writers[0].run(lambda conn: dict(conn.execute(
            sa.select(recipients.c.message_id, recipients.c.lease_owner)).all()))
        for agent in agents:
            await agent.stop(2.0)
            await agent.leave(2.0)
        for w in writers:
            w.stop()
        assert sorted(n.name for n in alive) == ["ahead", "right"]
        assert held == {"LIVE": "right", "GONE": "gone-node"}

    asyncio.run(run())
    assert "is dead" not in caplog.text
