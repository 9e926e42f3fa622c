"""Outcomes are written only under the lease they were attempted with: a node taken for dead
whose recipient was claimed again (or bounced by an operator) cannot overwrite the newer outcome."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from mailrelay.delivery import operator
from mailrelay.delivery.classify import Verdict
from mailrelay.delivery.outcomes import RecipientOutcome, record_many
from mailrelay.spool import nodes
from mailrelay.spool.leases import Claim, claim_due
from mailrelay.store.schema import attempts, events, messages, recipients, suppressions

NOW = 1_700_000_100.0
DELIVERED = Verdict("delivered", "2.0.0", "250 2.0.0 OK queued", remote=True)
UNKNOWN = Verdict("bounced", "5.1.1", "550 5.1.1 <a@x.test>: user unknown", remote=True)


def _claim(engine: sa.Engine, node: str, now: float) -> list[Claim]:
    with engine.begin() as conn:
        return claim_due(conn, node=node, now=now, limit=10, lease_seconds=900, next_attempt=lambda n: 300.0)


def _record(engine: sa.Engine, claim: Claim, verdict: Verdict, owner: str, now: float) -> tuple[int, ...]:
    """The ids of the recipients whose outcome was refused."""
    with engine.begin() as conn:
        [done] = record_many(conn, [(claim, [RecipientOutcome(r, verdict, "mx.x.test", "127.0.0.2")
                                             for r in claim.recipients])],
                             owner=owner, now=now, hostname="relay.test", max_lifetime=86400)
    return tuple(r.id for r in done.refused)


def _start(engine: sa.Engine, add_message: Callable[..., str]) -> Claim:
    """Node A claims Q1's one recipient, then is buried as dead (its lease handed back)."""
    add_message("Q1", rcpts=[("a@x.test", "queued")])
    with engine.begin() as conn:
        conn.execute(recipients.update().values(next_attempt_at=NOW - 1))
        nodes.register(conn, name="A", host="h1", now=NOW)
        nodes.register(conn, name="B", host="h2", now=NOW)
    [claim] = _claim(engine, "A", NOW)
    with engine.begin() as conn:
        assert nodes.bury(conn, name="A", heartbeat_at=NOW, now=NOW + 60) == 1
    return claim


def _state(engine: sa.Engine) -> tuple[str, str | None, int, list[str], list[str]]:
    """(status, lease owner, messages, event types, attempt outcomes)"""
    with engine.connect() as conn:
        r = conn.execute(sa.select(recipients.c.status, recipients.c.lease_owner)
                         .where(recipients.c.message_id == "Q1")).one()
        n = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
        types = list(conn.execute(sa.select(events.c.type).order_by(events.c.id)).scalars())
        tried = list(conn.execute(sa.select(attempts.c.outcome).order_by(attempts.c.id)).scalars())
    return r.status, r.lease_owner, n, types, tried


def test_a_late_bounce_after_another_node_delivered_is_refused(engine: sa.Engine,
                                                                 add_message: Callable[..., str]) -> None:
    late = _start(engine, add_message)
    [again] = _claim(engine, "B", NOW + 61)
    assert _record(engine, again, DELIVERED, "B", NOW + 62) == ()
    assert _record(engine, late, UNKNOWN, "A", NOW + 63) == (late.recipients[0].id,)
    # Delivered stays; no bounce event, no DSN, no suppression; A's attempt is kept as history.
    assert _state(engine) == ("delivered", None, 1, ["delivered"], ["delivered", "bounced"])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one() == 0


def test_a_late_outcome_while_another_node_holds_the_lease_leaves_it_alone(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    late = _start(engine, add_message)
    _claim(engine, "B", NOW + 61)
    assert _record(engine, late, DELIVERED, "A", NOW + 62) == (late.recipients[0].id,)
    assert _state(engine)[:3] == ("queued", "B", 1)  # B's attempt goes on and is recorded as usual


def test_a_late_outcome_after_an_operator_bounce_is_refused(engine: sa.Engine,
                                                              add_message: Callable[..., str]) -> None:
    late = _start(engine, add_message)
    with engine.begin() as conn:
        assert operator.bounce(conn, "Q1", now=NOW + 61, hostname="relay.test") == 1
    assert _record(engine, late, DELIVERED, "A", NOW + 62) == (late.recipients[0].id,)
    status, _, n, types, _ = _state(engine)
    assert (status, n) == ("bounced", 2) and "delivered" not in types  # the operator's DSN, nothing more


def test_a_late_outcome_nobody_took_over_is_recorded(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    # Handed back but not yet claimed again: the 250 we got is written, so it is not sent twice.
    late = _start(engine, add_message)
    assert _record(engine, late, DELIVERED, "A", NOW + 62) == ()
    assert _state(engine) == ("delivered", None, 1, ["delivered"], ["delivered"])
    assert _claim(engine, "B", NOW + 63) == []
