"""`mailrelay queue retry | delete | bounce`, and `show`'s attempts and events, in a subprocess."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import sqlalchemy as sa

from mailrelay.store.schema import attempts, events, messages, recipients

from .conftest import CLI, InProcess


def _statuses(engine: sa.Engine, queue_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.address, r.status) for r in conn.execute(
            sa.select(recipients).where(recipients.c.message_id == queue_id).order_by(recipients.c.id))]


def test_show_explains_the_wait_then_retry_bounce_delete(
        cli: CLI, engine: sa.Engine, add_message: Callable[..., str]) -> None:
    now = time.time()
    add_message("Q1", created_at=now - 3600,
                rcpts=[("a@x.test", "deferred"), ("b@y.test", "delivered"), ("c@z.test", "queued")])
    with engine.begin() as conn:
        conn.execute(recipients.update().where(recipients.c.address == "a@x.test").values(
            attempts=1, next_attempt_at=now + 290, last_reply="451 4.7.1 greylisted"))
        rid = conn.execute(sa.select(recipients.c.id).where(recipients.c.address == "a@x.test")).scalar_one()
        conn.execute(attempts.insert().values(
            message_id="Q1", recipient_id=rid, at=now - 10, mx_host="mx1.x.test", ip="192.0.2.25",
            tls="TLSv1.3 TLS_AES_256_GCM_SHA384", reply="451 4.7.1 greylisted", outcome="deferred"))

    shown = cli("queue", "show", "Q1").out
    assert "  a@x.test: next attempt in 4m; 1 attempt; last reply: 451 4.7.1 greylisted" in shown
    assert "  c@z.test: due now; 0 attempts" in shown
    assert "b@y.test:" not in shown  # delivered: not waiting
    tail = shown[shown.index("\nattempts:"):].splitlines()
    assert tail[2].split() == ["TIME", "RECIPIENT", "OUTCOME", "HOST", "IP", "TLS", "REPLY"]
    assert tail[3].split()[2:] == ["a@x.test", "deferred", "mx1.x.test", "192.0.2.25", "TLSv1.3",
                                   "TLS_AES_256_GCM_SHA384", "451", "4.7.1", "greylisted"]
    assert tail[-2:] == ["events:", "  none"]

    retried = cli("queue", "retry", "Q1")
    assert (retried.code, retried.out) == (0, "Q1: 2 recipients due now\n")
    assert "  a@x.test: due now; 1 attempt" in cli("queue", "show", "Q1").out
    assert cli("queue", "retry", "--all").out == "queue: 2 recipients due now\n"

    data = json.loads(cli("queue", "show", "Q1", "--json").out)
    assert [a["mx_host"] for a in data["attempts"]] == ["mx1.x.test"]
    assert [(e["type"], e["detail"]) for e in data["events"]] == [
        ("retried-by-operator", "2 recipients due now")] * 2

    bounced = cli("queue", "bounce", "Q1")
    assert bounced.code == 0
    assert bounced.out.startswith("Q1: 2 recipients bounced, DSN ") and bounced.out.endswith(
        " queued to the sender\n")
    assert _statuses(engine, "Q1") == [("a@x.test", "bounced"), ("b@y.test", "delivered"), ("c@z.test", "bounced")]
    dsn_id = bounced.out.split()[5]
    queued = json.loads(cli("queue", "list", "--status", "queued", "--json").out)
    assert [(e["id"], e["mail_from"], e["recipients"]) for e in queued] == [(dsn_id, "", ["sender@example.org"])]
    assert cli("queue", "bounce", "Q1").out == "Q1: 0 recipients bounced\n"
    assert "bounced-by-operator  a@x.test  5.0.0 bounced by the operator" in cli("queue", "show", "Q1").out

    deleted = cli("queue", "delete", "Q1", dsn_id)
    assert (deleted.code, deleted.out.splitlines()) == (
        0, ["Q1: deleted, with 3 recipients", f"{dsn_id}: deleted, with 1 recipient"])
    assert cli("queue", "list").out == "queue is empty\n"
    with engine.connect() as conn:
        kept = conn.execute(sa.select(events.c.message_id).where(events.c.type == "deleted-by-operator")
                            .order_by(events.c.id)).scalars().all()
    assert kept == ["Q1", dsn_id]


def test_list_status_filter(inproc: InProcess, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "deferred")])
    add_message("Q2", rcpts=[("b@x.test", "delivered")])
    listed = inproc("queue", "list", "--status", "deferred").out.splitlines()
    assert [line.split()[0] for line in listed] == ["ID", "Q1"]
    assert inproc("queue", "list", "--status", "bounced").out == "no bounced messages\n"
    bad = inproc("queue", "list", "--status", "lost")
    assert bad.code == 2 and "invalid choice: 'lost'" in bad.error_line


def test_unknown_ids_are_one_line_exit_2(
        cli: CLI, inproc: InProcess, engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1")
    for args in (("retry", "NOPE"), ("bounce", "NOPE")):
        result = inproc("queue", *args)
        assert result.code == 2
        assert result.error_line == "mailrelay: error: no message NOPE in the queue"
    # A mistyped id among several deletes none of them.
    result = cli("queue", "delete", "Q1", "NOPE")
    assert (result.code, result.out) == (2, "")
    assert result.error_line == "mailrelay: error: no message NOPE in the queue; nothing deleted"
    with engine.connect() as conn:
        assert conn.execute(sa.select(messages.c.id)).scalars().all() == ["Q1"]
    assert inproc("queue", "retry").code == 2  # neither ID nor --all
    assert inproc("queue", "retry", "Q1", "--all").code == 2
