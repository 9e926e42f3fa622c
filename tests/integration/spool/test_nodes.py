"""The nodes table: burying a dead node hands back its leases, never a live one's."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from mailrelay.spool import nodes
from mailrelay.spool.leases import claim_due
from mailrelay.store.schema import recipients

NOW = 1_700_000_100.0


def _lease(engine: sa.Engine, address: str, owner: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(recipients.update().where(recipients.c.address == address).values(
            lease_owner=owner, lease_until=NOW + 900, next_attempt_at=NOW + 300, attempts=1))


def _owners(engine: sa.Engine) -> dict[str, tuple[str | None, float | None]]:
    with engine.connect() as conn:
        return {r.address: (r.lease_owner, r.next_attempt_at) for r in conn.execute(
            sa.select(recipients.c.address, recipients.c.lease_owner, recipients.c.next_attempt_at))}


def test_bury_hands_back_the_dead_nodes_leases_and_its_inbound_ones(engine: sa.Engine,
                                                                   add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[(a, "queued") for a in ("a@x.test", "b@x.test", "c@x.test", "d@x.test")])
    with engine.begin() as conn:
        nodes.register(conn, name="dead", host="h", now=NOW)
        nodes.register(conn, name="alive", host="h", now=NOW)
    _lease(engine, "a@x.test", "dead")
    _lease(engine, "b@x.test", "dead/inbound")
    _lease(engine, "c@x.test", "alive")
    with engine.begin() as conn:
        assert nodes.bury(conn, name="dead", heartbeat_at=NOW, now=NOW + 60) == 2
    owners = _owners(engine)
    assert owners["a@x.test"] == (None, NOW + 60) and owners["b@x.test"] == (None, NOW + 60)
    assert owners["c@x.test"] == ("alive", NOW + 300)
    assert owners["d@x.test"][0] is None
    with engine.connect() as conn:
        assert [n.name for n in nodes.heartbeats(conn)] == ["alive"]


def test_a_node_that_beat_since_we_looked_is_not_buried(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "queued")])
    with engine.begin() as conn:
        nodes.register(conn, name="slow", host="h", now=NOW)
        assert nodes.beat(conn, name="slow", host="h", now=NOW + 1)
    _lease(engine, "a@x.test", "slow")
    with engine.begin() as conn:
        assert nodes.bury(conn, name="slow", heartbeat_at=NOW, now=NOW + 60) is None
    assert _owners(engine)["a@x.test"][0] == "slow"


def test_a_node_taken_for_dead_learns_it_at_its_next_beat_and_is_back(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        nodes.register(conn, name="n", host="h", now=NOW)
        nodes.bury(conn, name="n", heartbeat_at=NOW, now=NOW + 60)
        assert nodes.beat(conn, name="n", host="h", now=NOW + 61) is False
        assert nodes.beat(conn, name="n", host="h", now=NOW + 62) is True


def test_a_live_owners_lease_does_not_expire_but_one_without_a_row_does(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    # A database outage longer than lease_seconds: when it is back, the owner still has its row
    # and may be about to write outcomes; nobody takes its work by the clock.
    add_message("Q1", rcpts=[(a, "queued") for a in ("a@x.test", "b@x.test", "c@x.test")])
    with engine.begin() as conn:
        nodes.register(conn, name="alive", host="h", now=NOW)
        conn.execute(recipients.update().values(next_attempt_at=NOW - 1, lease_until=NOW - 1))
        conn.execute(recipients.update().where(recipients.c.address == "a@x.test").values(lease_owner="alive"))
        conn.execute(recipients.update().where(recipients.c.address == "b@x.test")
                     .values(lease_owner="alive/inbound"))
        conn.execute(recipients.update().where(recipients.c.address == "c@x.test")
                     .values(lease_owner="old-version-d0"))
        claims = claim_due(conn, node="other", now=NOW, limit=10, lease_seconds=900, next_attempt=lambda n: 60.0)
    assert [r.address for c in claims for r in c.recipients] == ["c@x.test"]
