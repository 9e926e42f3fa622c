"""Operator actions (retry, delete, bounce) on rows inserted directly, on both databases."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from mailrelay.delivery import operator
from mailrelay.spool import nodes
from mailrelay.spool.reader import QueueReader
from mailrelay.store import bodies
from mailrelay.store.schema import attempts, events, messages, recipients

T0 = 1_700_000_000.0
NOW = T0 + 3600


def _rcpts(engine: sa.Engine, queue_id: str) -> list[tuple[str, str, float | None, str | None]]:
    with engine.connect() as conn:
        return [(r.address, r.status, r.next_attempt_at, r.lease_owner) for r in conn.execute(
            sa.select(recipients).where(recipients.c.message_id == queue_id).order_by(recipients.c.id))]


def _events(engine: sa.Engine, queue_id: str | None = None) -> list[tuple[str, str | None, str | None]]:
    query = sa.select(events.c.type, events.c.message_id, events.c.recipient).order_by(events.c.id)
    if queue_id is not None:
        query = query.where(events.c.message_id == queue_id)
    with engine.connect() as conn:
        return [(e.type, e.message_id, e.recipient) for e in conn.execute(query)]


def _set(engine: sa.Engine, queue_id: str, address: str, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(recipients.update().where(recipients.c.message_id == queue_id,
                                               recipients.c.address == address).values(**values))


def _add_attempt(engine: sa.Engine, queue_id: str, address: str, at: float) -> None:
    with engine.begin() as conn:
        rid = conn.execute(sa.select(recipients.c.id).where(recipients.c.message_id == queue_id,
                                                              recipients.c.address == address)).scalar_one()
        conn.execute(attempts.insert().values(message_id=queue_id, recipient_id=rid, at=at, mx_host="mx.x.test",
                                              ip="192.0.2.25", tls=None, reply="451 4.7.1 try later",
                                              outcome="deferred"))


def test_retry_one_makes_pending_recipients_due_now(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred"), ("b@y.test", "delivered"), ("c@z.test", "queued")])
    add_message("Q2", rcpts=[("d@x.test", "deferred")])
    _set(engine, "Q1", "a@x.test", next_attempt_at=T0 + 9000, lease_owner="dead-node", lease_until=T0)
    _set(engine, "Q2", "d@x.test", next_attempt_at=T0 + 9000)
    with engine.begin() as conn:
        assert operator.retry(conn, "Q1", now=NOW) == 2
    assert _rcpts(engine, "Q1") == [("a@x.test", "deferred", NOW, None), ("b@y.test", "delivered", None, None),
                                    ("c@z.test", "queued", NOW, None)]
    assert _rcpts(engine, "Q2") == [("d@x.test", "deferred", T0 + 9000, None)]  # untouched
    assert _events(engine) == [("retried-by-operator", "Q1", None)]


def test_retry_all_writes_one_event_per_message(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred"), ("b@x.test", "deferred")])
    add_message("Q2", rcpts=[("c@x.test", "queued")])
    add_message("Q3", rcpts=[("d@x.test", "delivered")])
    with engine.begin() as conn:
        assert operator.retry(conn, None, now=NOW) == 3
    assert [r[2] for q in ("Q1", "Q2") for r in _rcpts(engine, q)] == [NOW, NOW, NOW]
    assert sorted(_events(engine)) == [("retried-by-operator", "Q1", None), ("retried-by-operator", "Q2", None)]
    with engine.begin() as conn:
        assert operator.retry(conn, "Q3", now=NOW) == 0
    assert len(_events(engine)) == 2


def test_retry_keeps_a_live_lease(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    # An attempt in progress: a second claim beside it would deliver twice.
    add_message("Q1", rcpts=[("a@x.test", "deferred")])
    _set(engine, "Q1", "a@x.test", next_attempt_at=NOW + 600, lease_owner="node-1", lease_until=NOW + 60)
    with engine.begin() as conn:
        assert operator.retry(conn, "Q1", now=NOW) == 1
    assert _rcpts(engine, "Q1") == [("a@x.test", "deferred", NOW, "node-1")]


def test_retry_and_bounce_keep_the_lease_of_a_live_node_past_its_lease_until(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    # After a database outage longer than lease_seconds the owner is still at work (it has a
    # row in nodes): its lease is live whatever lease_until says.
    add_message("Q1", rcpts=[("a@x.test", "deferred")])
    with engine.begin() as conn:
        nodes.register(conn, name="node-1", host="h", now=NOW)
    _set(engine, "Q1", "a@x.test", next_attempt_at=NOW + 600, lease_owner="node-1", lease_until=NOW - 60)
    with engine.begin() as conn:
        assert operator.retry(conn, "Q1", now=NOW) == 1
        assert operator.bounce(conn, "Q1", now=NOW, hostname="mx.test") == 0
    assert _rcpts(engine, "Q1") == [("a@x.test", "deferred", NOW, "node-1")]


def test_delete_removes_children_and_keeps_an_event(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred"), ("b@y.test", "delivered")])
    add_message("Q2")
    _add_attempt(engine, "Q1", "a@x.test", T0 + 60)
    with engine.begin() as conn:
        assert operator.delete(conn, "Q1", now=NOW) == 2
    with engine.connect() as conn:
        for table in (messages, recipients, attempts):
            key = table.c.id if table is messages else table.c.message_id
            assert conn.execute(sa.select(sa.func.count()).select_from(table).where(key == "Q1")).scalar() == 0
        event = conn.execute(sa.select(events).where(events.c.type == "deleted-by-operator")).one()
    assert (event.message_id, event.account_id, event.at) == ("Q1", 1, NOW)
    assert event.detail == "1 deferred, 1 delivered"
    assert [e.id for e in QueueReader(engine).list()] == ["Q2"]


def test_unknown_queue_id_raises(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(operator.NoSuchMessage, match="no message NOPE in the queue"):
            operator.retry(conn, "NOPE", now=NOW)
        with pytest.raises(operator.NoSuchMessage, match="no message NOPE in the queue"):
            operator.delete(conn, "NOPE", now=NOW)
        with pytest.raises(operator.NoSuchMessage, match="no message NOPE in the queue"):
            operator.bounce(conn, "NOPE", now=NOW, hostname="mx.test")
    assert _events(engine) == []


def _dsns(engine: sa.Engine) -> list[tuple[str, str, bytes, str]]:
    with engine.connect() as conn:
        return [(m.id, m.mail_from, bodies.Content.of(m).body, m.address) for m in conn.execute(
            sa.select(messages.c.id, messages.c.mail_from, *bodies.CONTENT_COLUMNS, recipients.c.address)
            .select_from(bodies.with_content(messages.join(recipients, recipients.c.message_id == messages.c.id)))
            .where(messages.c.listener == "bounce"))]


def test_bounce_queues_one_dsn_for_all_pending(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred"), ("b@y.test", "delivered"), ("c@z.test", "queued"),
                             ("d@z.test", "deferred")])
    _add_attempt(engine, "Q1", "a@x.test", T0 + 60)
    _set(engine, "Q1", "a@x.test", attempts=1, last_reply="451 4.7.1 try later")
    _set(engine, "Q1", "d@z.test", lease_owner="node-1", lease_until=NOW + 60)  # being delivered now
    with engine.begin() as conn:
        assert operator.bounce(conn, "Q1", now=NOW, hostname="mx.test") == 2
    detail = QueueReader(engine).show("Q1")
    assert detail is not None
    assert [(r.address, r.status, r.attempts, r.last_reply) for r in detail.recipients] == [
        ("a@x.test", "bounced", 1, "5.0.0 bounced by the operator"),
        ("b@y.test", "delivered", 0, None),
        ("c@z.test", "bounced", 0, "5.0.0 bounced by the operator"),
        ("d@z.test", "deferred", 0, None)]
    assert len(detail.attempts) == 1  # attempts untouched
    assert [(e.type, e.recipient) for e in detail.events] == [
        ("bounced-by-operator", "a@x.test"), ("bounced-by-operator", "c@z.test"),
        ("bounce-queued", "sender@example.org")]
    [(dsn_id, mail_from, body, to)] = _dsns(engine)
    assert (mail_from, to) == ("", "sender@example.org")
    assert detail.events[-1].detail.startswith(f"DSN {dsn_id}")
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in body
    assert b"Final-Recipient: rfc822; a@x.test" in body and b"Final-Recipient: rfc822; c@z.test" in body
    assert b"d@z.test" not in body and b"Status: 5.0.0" in body
    assert b"Subject: hello" in body and b"the body" not in body  # headers only, not content


def test_bounce_of_a_null_sender_queues_no_dsn(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", mail_from="", rcpts=[("a@x.test", "deferred")])
    with engine.begin() as conn:
        assert operator.bounce(conn, "Q1", now=NOW, hostname="mx.test") == 1
        assert operator.bounce(conn, "Q1", now=NOW, hostname="mx.test") == 0  # nothing pending now
    assert _rcpts(engine, "Q1")[0][1] == "bounced"
    assert _dsns(engine) == []
    assert _events(engine, "Q1") == [("bounced-by-operator", "Q1", "a@x.test")]


def test_show_lists_attempts_and_events_oldest_first(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred"), ("b@y.test", "queued")])
    _add_attempt(engine, "Q1", "a@x.test", T0 + 600)
    _add_attempt(engine, "Q1", "a@x.test", T0 + 60)
    with engine.begin() as conn:
        operator.retry(conn, "Q1", now=NOW)
    detail = QueueReader(engine).show("Q1")
    assert detail is not None
    assert [(a.at, a.recipient, a.mx_host, a.ip, a.reply, a.outcome) for a in detail.attempts] == [
        (T0 + 60, "a@x.test", "mx.x.test", "192.0.2.25", "451 4.7.1 try later", "deferred"),
        (T0 + 600, "a@x.test", "mx.x.test", "192.0.2.25", "451 4.7.1 try later", "deferred")]
    assert [(e.type, e.detail) for e in detail.events] == [("retried-by-operator", "2 recipients due now")]


def test_list_filters_by_status(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", created_at=T0, rcpts=[("a@x.test", "deferred"), ("b@x.test", "delivered")])
    add_message("Q2", created_at=T0 + 1, rcpts=[("c@x.test", "queued")])
    reader = QueueReader(engine)
    assert [e.id for e in reader.list(status="deferred")] == ["Q1"]
    assert [e.id for e in reader.list(status="queued")] == ["Q2"]
    assert reader.list(status="bounced") == []
    assert (reader.count(status="delivered"), reader.count()) == (1, 2)


def test_bounce_respects_notify_never(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred")])
    _set(engine, "Q1", "a@x.test", params='{"NOTIFY": "NEVER"}')  # RFC 3461 §4.1
    with engine.begin() as conn:
        assert operator.bounce(conn, "Q1", now=NOW, hostname="mx.test") == 1
    assert _rcpts(engine, "Q1")[0][1] == "bounced"
    assert _dsns(engine) == []
