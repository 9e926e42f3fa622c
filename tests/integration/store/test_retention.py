"""Retention (store.retention, spool.retention, `mailrelay retention run`) on both databases."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailrelay.settings import ConfigError, RetentionSettings, load_settings
from mailrelay.spool.retention import RetentionSweeper
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store import bodies
from mailrelay.store import retention as R
from mailrelay.store.db import create_engine
from mailrelay.store.schema import attempts, events, message_bodies, message_categories, messages, recipients
from tests.integration.smtp.conftest import Node

NOW = 1_800_000_000.0
DAY = 86_400.0
DAYS = {"bodies": 7.0, "messages": 30.0, "sandbox": 30.0, "inbound": 30.0}
BODY = b"Subject: retention\r\n\r\n" + b"x" * 2000 + b"\r\n"


def _add(engine: sa.Engine, add_message: Callable[..., str], qid: str, age_days: float, statuses: tuple[str, ...],
         *, sandbox: bool = False, direction: str = "out", changed_days: float | None = None,
         dsn: bool = False, unposted: bool = False, inline: bool = False) -> str:
    created = NOW - age_days * DAY
    add_message(qid, created_at=created, body=BODY, inline=inline,
                rcpts=[(f"r{i}@example.net", s) for i, s in enumerate(statuses)])
    with engine.begin() as conn:
        conn.execute(messages.update().where(messages.c.id == qid).values(sandbox=sandbox, direction=direction))
        if changed_days is not None:
            conn.execute(recipients.update().where(recipients.c.message_id == qid)
                         .values(updated_at=NOW - changed_days * DAY))
        if dsn:
            conn.execute(recipients.update().where(recipients.c.message_id == qid).values(dsn_pending="{}"))
        account_id = conn.execute(sa.select(messages.c.account_id).where(messages.c.id == qid)).scalar_one()
        for rid, address in conn.execute(sa.select(recipients.c.id, recipients.c.address)
                                         .where(recipients.c.message_id == qid)).all():
            conn.execute(attempts.insert().values(message_id=qid, recipient_id=rid, at=created, reply="250 ok",
                                                  outcome="delivered"))
            conn.execute(events.insert().values(account_id=account_id, message_id=qid, recipient=address,
                                                type="delivered", at=created,
                                                webhook_due_at=created if unposted else None))
        conn.execute(message_categories.insert().values(account_id=account_id, category="news", message_id=qid))
    return qid


def _state(engine: sa.Engine) -> dict[str, tuple[int, int, int, int]]:
    """Per message: body length (as read back), recipients, attempts, events."""
    with engine.connect() as conn:
        content = bodies.load(conn, conn.execute(sa.select(messages.c.id)).scalars())
        out = {}
        for qid, stored in content.items():
            def n(table: sa.Table, qid: str = qid) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                        .where(table.c.message_id == qid)).scalar_one())
            out[qid] = (len(stored.body), n(recipients), n(attempts), n(events))
        return out


@pytest.fixture
def mail(engine: sa.Engine, add_message: Callable[..., str]) -> dict[str, str]:
    a = functools.partial(_add, engine, add_message)
    return {
        "old-done": a("m01", 40, ("delivered", "bounced")),
        "mid-done": a("m02", 10, ("delivered", "dropped", "expired")),
        "new-done": a("m03", 1, ("delivered",)),
        "old-deferred": a("m04", 40, ("delivered", "deferred")),
        "old-queued": a("m05", 40, ("queued",)),
        "old-dsn": a("m06", 40, ("bounced",), dsn=True),
        "old-changed-lately": a("m07", 40, ("expired",), changed_days=2),
        "old-unposted": a("m08", 40, ("delivered",), unposted=True),
        "old-sandbox": a("m09", 40, ("captured",), sandbox=True),
        "mid-sandbox": a("m10", 10, ("captured",), sandbox=True),
        "old-inbox": a("m11", 40, ("kept",), direction="in"),
        "old-inbound-waiting": a("m12", 40, ("inbound",), direction="in"),
        "mid-old-done": a("m13", 12, ("delivered",), inline=True),  # written before migration 0015
    }


def test_finished_mail_loses_its_body_then_goes_with_all_its_rows(engine: sa.Engine, mail: dict[str, str]) -> None:
    before = _state(engine)
    totals = R.sweep(engine, R.Plan.at(NOW, DAYS), batch=2)
    after = _state(engine)
    gone = {k for k, q in mail.items() if q not in after}
    assert gone == {"old-done", "old-sandbox", "old-inbox"}
    cleared = {k for k, q in mail.items() if q in after and after[q][0] == 0}
    assert cleared == {"mid-done", "mid-old-done"}
    for k, q in mail.items():  # the rest untouched, rows and all
        if k not in gone | cleared:
            assert after[q] == before[q], k
    for k in cleared:  # a cleared message keeps its recipients, attempts and events
        assert after[mail[k]][1:] == before[mail[k]][1:]
    with engine.connect() as conn:  # nothing left behind by the deleted ones
        for table in (recipients, attempts, events, message_categories, message_bodies):
            ids = set(conn.execute(sa.select(table.c.message_id)).scalars())
            assert not ids & {mail["old-done"], mail["old-sandbox"], mail["old-inbox"]}, table.name
    assert (totals["messages"].messages, totals["messages"].recipients, totals["messages"].attempts,
            totals["messages"].events) == (1, 2, 2, 2)
    assert totals["sandbox"].messages == 1 and totals["inbound"].messages == 1
    trace = len(b"Received: from client.test by mx.test\r\n")
    # bytes freed as stored: one body compressed, the other (written before 0015) as it came
    assert totals["bodies"].messages == 2
    assert totals["bodies"].bytes == trace + len(bodies.pack(BODY)) + trace + len(BODY)
    with engine.connect() as conn:  # both kinds emptied: no body row, empty inline columns
        assert not set(conn.execute(sa.select(message_bodies.c.message_id)).scalars()) & {
            mail["mid-done"], mail["mid-old-done"]}
        assert conn.execute(sa.select(sa.func.max(sa.func.length(messages.c.body))).where(
            messages.c.id == mail["mid-old-done"])).scalar_one() == 0
    # a second sweep finds nothing more
    assert all(t.messages == 0 for t in R.sweep(engine, R.Plan.at(NOW, DAYS), batch=2).values())


def test_a_period_of_zero_keeps_that_kind_and_sandbox_has_its_own(engine: sa.Engine, mail: dict[str, str]) -> None:
    totals = R.sweep(engine, R.Plan.at(NOW, {**DAYS, "messages": 0, "bodies": 0, "sandbox": 5}), batch=100)
    assert set(totals) == {"sandbox", "inbound"}
    left = _state(engine)
    assert mail["old-sandbox"] not in left and mail["mid-sandbox"] not in left
    assert mail["old-done"] in left and left[mail["old-done"]][0] == len(BODY)


def test_batches_are_bounded(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    for i in range(7):
        _add(engine, add_message, f"b{i:02}", 40, ("delivered",))
    seen: list[int] = []
    totals = R.sweep(engine, R.Plan.at(NOW, DAYS), batch=3, progress=lambda t: seen.append(t.messages))
    assert seen == [3, 6, 7]  # each transaction took at most 3 messages
    assert totals["messages"].batches == 3
    assert _state(engine) == {}


def test_background_sweeper_goes_through_the_writer(engine: sa.Engine, mail: dict[str, str]) -> None:
    async def run() -> dict[str, R.Removed]:
        writer = SpoolWriter(engine)
        writer.start(asyncio.get_running_loop())
        try:
            sweeper = RetentionSweeper(RetentionSettings(batch=2, pause=0.0), engine, writer, clock=lambda: NOW)
            return await sweeper.sweep_once()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, writer.stop)

    totals = asyncio.run(run())
    assert {k: t.messages for k, t in totals.items()} == {"messages": 1, "sandbox": 1, "inbound": 1, "bodies": 2}
    assert len(_state(engine)) == len(mail) - 3


def test_background_sweeps_during_an_outage_are_one_line_of_the_writers_not_one_per_sweep(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = create_engine(f"postgresql://mailrelay@127.0.0.1:{closed}/mailrelay", connect_timeout=2)

    async def run() -> RetentionSweeper:
        writer = SpoolWriter(refused)
        writer.start(asyncio.get_running_loop())
        sweeper = RetentionSweeper(RetentionSettings(interval=0.02), refused, writer)
        sweeper.start()
        while writer.health.failures < 5:
            await asyncio.sleep(0.01)
        await sweeper.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        return sweeper

    caplog.set_level(logging.INFO)
    try:
        assert asyncio.run(asyncio.wait_for(run(), 10)).sweeps == 0
    finally:
        refused.dispose()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith("database unavailable:"), lines


def _cli(config: Path, *args: str) -> dict[str, R.Removed]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRELAY_")}
    proc = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), "retention", "run", *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=config.parent)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["dry_run"] == ("--dry-run" in args)
    return {k["kind"]: k["messages"] for k in found["kinds"]}


def test_cli_dry_run_changes_nothing_and_the_run_matches_it(engine: sa.Engine, db_url: str, tmp_path: Path,
                                                            add_message: Callable[..., str]) -> None:
    ahead = (NOW - time.time()) / DAY  # the CLI sweeps at the real time: ages counted from it
    for i in range(4):
        _add(engine, add_message, f"c{i:02}", ahead + 40, ("delivered",))
    _add(engine, add_message, "c09", ahead + 10, ("delivered",))  # 10 days old: its body only
    config = tmp_path / "mailrelay.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n[retention]\nbatch = 3\n')
    before = _state(engine)
    dry = _cli(config, "--dry-run", "--json")
    assert dry == {"bodies": 1, "messages": 4, "sandbox": 0, "inbound": 0}
    assert _state(engine) == before
    assert _cli(config, "--json") == dry
    assert set(_state(engine)) == {"c09"} and _state(engine)["c09"][0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRELAY_")}
    table = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), "retention", "run", "--dry-run"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path).stdout
    assert table.splitlines()[0].split() == ["KIND", "DAYS", "MESSAGES", "RECIPIENTS", "ATTEMPTS", "EVENTS",
                                             "BODY", "BYTES", "WOULD", "REMOVE"]
    assert "dry run: nothing was changed" in table


def test_sqlite_file_does_not_grow_over_sweep_and_refill(engine: sa.Engine, add_message: Callable[..., str]) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's file only")
    path = Path(str(engine.url.database))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # a new database: incremental
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    empty = path.stat().st_size

    def fill(prefix: str) -> int:
        for i in range(150):
            _add(engine, add_message, f"{prefix}{i:03}", 40, ("delivered",))
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
        return path.stat().st_size

    full = fill("a")
    R.sweep(engine, R.Plan.at(NOW, DAYS), batch=50)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
        assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0  # given back
    assert path.stat().st_size - empty < (full - empty) / 2
    for prefix in ("b", "c"):
        assert fill(prefix) <= full * 1.05
        R.sweep(engine, R.Plan.at(NOW, DAYS), batch=50)


def test_settings_name_the_key_and_take_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text("[retention]\nbodies_days = 0.5\nbatch = 20\n")
    s = load_settings(config, env={"MAILRELAY_RETENTION_MESSAGES_DAYS": "1.5"})
    assert (s.retention.bodies_days, s.retention.batch, s.retention.messages_days) == (0.5, 20, 1.5)
    with pytest.raises(ConfigError, match=r"retention\.bodies_days: expected at most retention\.messages_days"):
        load_settings(config, env={"MAILRELAY_RETENTION_MESSAGES_DAYS": "0.25"})
    config.write_text("[retention]\nbatch = 0\n")
    with pytest.raises(ConfigError, match=r"retention\.batch: expected 1 to 10000"):
        load_settings(config, env={})
    config.write_text("[retention]\nsandbox_days = -1\n")
    with pytest.raises(ConfigError, match=r"retention\.sandbox_days"):
        load_settings(config, env={})


def test_the_serving_node_sweeps_in_the_background(node_factory: Callable[..., Node], engine: sa.Engine,
                                                   add_message: Callable[..., str]) -> None:
    node_factory("[retention]\ninterval = 0.2\npause = 0\nmessages_days = 0.0001\nbodies_days = 0.0001\n")
    old = time.time() - 60  # a minute: older than 0.0001 days (8.64 s)
    add_message("s01", created_at=old, rcpts=[("a@example.net", "delivered")])
    add_message("s02", created_at=old, rcpts=[("a@example.net", "deferred")])
    add_message("s03", created_at=time.time(), rcpts=[("a@example.net", "delivered")])
    deadline = time.monotonic() + 10
    while "s01" in _state(engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(_state(engine)) == {"s02", "s03"}


def test_concurrent_sweepers_on_postgresql_skip_each_others_rows(engine: sa.Engine,
                                                                 add_message: Callable[..., str]) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("several nodes share PostgreSQL only")
    ids = [_add(engine, add_message, f"p{i:02}", 40, ("delivered",)) for i in range(4)]
    cutoff = NOW - 30 * DAY
    with engine.connect() as first, engine.connect() as second, first.begin():
        assert R.apply(first, "messages", cutoff, ids[:3]).messages == 3  # locked until it commits
        with second.begin():
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")  # a wait would fail the test, not hang it
            assert R.apply(second, "messages", cutoff, ids).messages == 1  # skips the three, no wait
    assert _state(engine) == {}
