"""The webhook outbox on both databases: claiming in order, holding back behind a retry,
giving up, and turning a webhook off."""

from __future__ import annotations

import sqlalchemy as sa

from mailrelay.events import outbox
from mailrelay.events.hooks import WebhookService
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import accounts, events

T = 1_700_000_000.0


def setup(engine: sa.Engine, n: int = 3) -> int:
    with engine.begin() as conn:
        aid = conn.execute(accounts.insert().values(name="alice", password_hash="x", created_at=T, updated_at=T)
                           .returning(accounts.c.id)).scalar_one()
    WebhookService(engine).set_url("alice", "https://hooks.example/x")
    add(engine, aid, n)
    return int(aid)


def add(engine: sa.Engine, aid: int, n: int, at: float = T) -> None:
    with engine.begin() as conn:
        add_events(conn, [{"account_id": aid, "message_id": "Q1", "recipient": f"r{i}@x.test", "type": "processed",
                           "at": at} for i in range(n)]
                   + [{"account_id": aid, "recipient": "r@x.test", "type": "suppression-added", "at": at}])


def claim(engine: sa.Engine, now: float, **kw: object) -> outbox.Claimed:
    args: dict[str, object] = {"now": now, "lease_until": now + 30, "max_events": 100, "max_accounts": 5,
                               "per_account": 100, "max_age": 86400.0} | kw
    with engine.begin() as conn:
        return outbox.claim(conn, **args)  # type: ignore[arg-type]


def due(engine: sa.Engine) -> list[tuple[int, float | None]]:
    with engine.connect() as conn:
        return [(r.id, r.webhook_due_at) for r in conn.execute(
            sa.select(events.c.id, events.c.webhook_due_at).order_by(events.c.id))]


def test_claim_in_order_and_hold_back_behind_a_retry(engine: sa.Engine) -> None:
    setup(engine)
    assert [d is not None for _, d in due(engine)] == [True, True, True, False], "bookkeeping is not posted"
    got = claim(engine, T + 1, per_account=2)
    [batch] = got.batches
    assert [r.recipient for r in batch.rows] == ["r0@x.test", "r1@x.test"] and batch.url == "https://hooks.example/x"
    assert claim(engine, T + 2).batches == [], "nothing past events in flight"
    with engine.begin() as conn:
        outbox.settle(conn, sent=[], failed=[r.id for r in batch.rows], retry_at=T + 100)
    aid = batch.account_id
    add(engine, aid, 1, at=T + 3)
    assert claim(engine, T + 4).batches == [], "held back behind the failed ones"
    assert [d for _, d in due(engine)][2:] == [T + 100, None, T + 100, None], "moved to the retry time"
    [batch] = claim(engine, T + 100).batches
    assert [r.id for r in batch.rows] == [1, 2, 3, 5] and batch.attempts == 1
    with engine.begin() as conn:
        outbox.settle(conn, sent=[r.id for r in batch.rows], failed=[], retry_at=None)
    assert all(d is None for _, d in due(engine))


def test_events_older_than_max_age_are_given_up(engine: sa.Engine) -> None:
    setup(engine)
    got = claim(engine, T + 90_000)
    assert got.expired == 3 and got.batches == []


def test_webhook_off_drops_pending_and_unhooked_accounts_are_skipped(engine: sa.Engine) -> None:
    setup(engine)
    assert WebhookService(engine).turn_off("alice") == 3
    assert all(d is None for _, d in due(engine))
    with engine.begin() as conn:  # an event added while other processes still cache the old URL
        conn.execute(events.insert().values(account_id=1, type="delivered", at=T, webhook_due_at=T))
    assert claim(engine, T + 1).batches == []
    assert all(d is None for _, d in due(engine))


def test_one_accounts_backlog_does_not_starve_the_others(engine: sa.Engine) -> None:
    """The first `max_events` due events all belong to alice, whose oldest are in flight (here
    or in another process): bob's event, behind them, must still be claimed."""
    aid = setup(engine, n=10)
    with engine.begin() as conn:
        bid = conn.execute(accounts.insert().values(name="bob", password_hash="x", created_at=T, updated_at=T)
                           .returning(accounts.c.id)).scalar_one()
    WebhookService(engine).set_url("bob", "https://hooks.example/b")
    add(engine, bid, 1)
    [first] = claim(engine, T + 1, per_account=2, max_accounts=1).batches
    assert first.account_id == aid
    for busy in ((), (aid,)):  # in flight elsewhere / in this process
        got = claim(engine, T + 2, max_events=4, busy=busy)
        assert [b.account_id for b in got.batches] == [bid]
        with engine.begin() as conn:
            outbox.settle(conn, sent=[], failed=[r.id for r in got.batches[0].rows], retry_at=T + 2)
