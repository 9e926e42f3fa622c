"""Setting an account's event webhook applies to the next event recorded, in any process:
no process decides from a stale view of which accounts have a webhook (issue 10, item 1)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from mailrelay.events.hooks import WebhookService
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import accounts, events
from tests.integration.cli.conftest import run_cli

T = 1_700_000_000.0


def account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(name=name, password_hash="x", created_at=T, updated_at=T)
                                .returning(accounts.c.id)).scalar_one())


def record(engine: sa.Engine, aid: int, type_: str = "processed") -> int:
    with engine.begin() as conn:
        add_events(conn, [{"account_id": aid, "message_id": "Q1", "recipient": "r@x.test", "type": type_, "at": T}])
        return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one())


def due(engine: sa.Engine, event_id: int) -> float | None:
    with engine.connect() as conn:
        value = conn.execute(sa.select(events.c.webhook_due_at).where(events.c.id == event_id)).scalar_one()
        return None if value is None else float(value)


def webhook_cli(db_url: str, tmp_path: Path, *args: str) -> None:
    config = tmp_path / "mailrelay.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n')
    r = run_cli("-c", str(config), "account", "webhook", *args, cwd=tmp_path)
    assert r.code == 0, r.err


def test_event_recorded_right_after_another_process_sets_the_webhook_is_posted(
        db_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    alice, bob = account(engine, "alice"), account(engine, "bob")
    WebhookService(engine).set_url("alice", "https://hooks.example/a")
    assert due(engine, record(engine, alice)) == T  # this process has now seen who has a webhook
    before = record(engine, bob)
    webhook_cli(db_url, tmp_path, "bob", "https://hooks.example/b")  # another process
    assert due(engine, record(engine, bob)) == T, "recorded after the command returned: posted"
    assert due(engine, before) is None, "recorded before bob had a webhook: not posted (as SendGrid)"
    assert due(engine, record(engine, bob, "suppression-added")) is None, "bookkeeping is never posted"
    webhook_cli(db_url, tmp_path, "bob", "--off")
    assert due(engine, record(engine, bob)) is None, "recorded after the webhook was turned off"
    assert due(engine, record(engine, alice)) == T


def test_many_rows_of_several_accounts_in_one_call(engine: sa.Engine) -> None:
    """The group commit's shape: one call, rows of hooked and unhooked accounts mixed."""
    alice, bob = account(engine, "alice"), account(engine, "bob")
    WebhookService(engine).set_url("bob", "https://hooks.example/b")
    with engine.begin() as conn:
        add_events(conn, [{"account_id": (alice, bob, None)[i % 3], "recipient": f"r{i}@x.test",
                           "type": ("processed", "suppression-added")[i % 2], "at": T + i} for i in range(12)])
    with engine.connect() as conn:
        got = [(r.account_id, r.type, r.webhook_due_at) for r in conn.execute(
            sa.select(events.c.account_id, events.c.type, events.c.webhook_due_at).order_by(events.c.id))]
    assert got == [((alice, bob, None)[i % 3], ("processed", "suppression-added")[i % 2],
                    T + i if i % 3 == 1 and i % 2 == 0 else None) for i in range(12)]
