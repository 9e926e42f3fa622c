"""`mailrelay status`: database, schema, delivery processes, queue by state, oldest deferred;
exit code 0 when healthy, 1 (with one stderr line per problem) when something is wrong."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from mailrelay.settings import redact_url
from mailrelay.store import migrate
from mailrelay.store.schema import nodes
from tests.integration.cli.conftest import CLI, InProcess


def _node(engine: sa.Engine, name: str, host: str, heartbeat_age: float) -> None:
    now = time.time()
    with engine.begin() as conn:
        conn.execute(nodes.insert().values(name=name, host=host, pid=4242, local_id=None, started_at=now - 3600,
                                           heartbeat_at=now - heartbeat_age))


def test_a_healthy_node_shows_its_database_workers_and_queue(cli: CLI, db_url: str, engine: sa.Engine,
                                                             add_message: Callable[..., str]) -> None:
    two_hours_ago = time.time() - 7200
    add_message("Q1", rcpts=[("a@x.test", "queued"), ("b@x.test", "deferred")], created_at=two_hours_ago)
    add_message("Q2", rcpts=[("c@y.test", "deferred"), ("d@y.test", "delivered")], created_at=time.time() - 60)
    _node(engine, "mx1.1.aaaaaa-d0", "mx1", 1)
    _node(engine, "mx1.2.bbbbbb-d1", "mx1", 3600)  # silent: counted, not up
    r = cli("status")  # a real process, once
    assert (r.code, r.err) == (0, ""), r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["database", redact_url(db_url), "reachable"]
    assert lines[1].split() == ["schema", migrate.head_revision(), "(current)"]
    assert lines[2] == "delivery  1 of 2 processes up on mx1"
    assert lines[3].startswith("deferred  oldest 2h (accepted ")
    hosts = lines[lines.index("") + 1:][:2]
    assert hosts[0].split() == ["HOST", "UP", "PROCESSES", "LEASED", "LAST", "HEARTBEAT"]
    assert hosts[1].split()[:4] == ["mx1", "1", "2", "0"]
    start = next(i for i, line in enumerate(lines) if line.split() == ["STATUS", "RECIPIENTS"])
    queue = {line.split()[0]: int(line.split()[1]) for line in lines[start + 1:]}
    assert queue == {"queued": 1, "deferred": 2, "delivered": 1, "bounced": 0, "expired": 0, "dropped": 0,
                     "captured": 0}


def test_no_live_delivery_process_is_exit_1_with_one_error_line_and_json_says_why(
        inproc: InProcess, engine: sa.Engine, add_message: Callable[..., str]) -> None:
    r = inproc("status")
    assert r.code == 1
    assert r.error_line == "mailrelay: error: no delivery process is up: nothing is being delivered"
    assert "delivery  0 of 0 processes up" in r.out and "deferred  oldest none" in r.out
    _node(engine, "mx2.3.cccccc-d0", "mx2", 3600)
    created = time.time() - 300
    add_message("Q3", rcpts=[("e@z.test", "deferred")], created_at=created)
    r = inproc("status", "--json")
    assert r.code == 1
    found = json.loads(r.out)
    assert found["healthy"] is False and found["problems"] == [
        "no delivery process is up (1 silent for over 30s)"]
    assert found["database"]["reachable"] is True and found["schema"]["current"] is True
    assert found["delivery"]["up"] == 0 and found["delivery"]["workers"] == 1
    assert [h["host"] for h in found["delivery"]["hosts"]] == ["mx2"]
    assert found["queue"]["deferred"] == 1
    assert found["oldest_deferred"]["created_at"] == created
    assert 299 <= found["oldest_deferred"]["age_seconds"] < 400
    _node(engine, "mx2.4.dddddd-d0", "mx2", 0)
    assert inproc("status", "--json").code == 0
    assert json.loads(inproc("status", "--json").out)["healthy"] is True


def test_a_schema_behind_head_is_reported_and_not_migrated(inproc: InProcess, engine: sa.Engine) -> None:
    head = migrate.head_revision()
    behind = f"{int(head) - 1:04d}"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": behind})
    _node(engine, "mx3.5.eeeeee-d0", "mx3", 0)
    r = inproc("status")
    assert r.code == 1
    assert r.error_line == (f"mailrelay: error: schema at revision {behind}, this mailrelay expects {head} "
                            "(a node of this version migrates it at start)")
    assert f"schema    {behind} (this mailrelay: {head})" in r.out
    assert migrate.current_revision(engine) == behind  # status only looks


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_database_is_exit_1_with_its_password_masked(
        inproc: InProcess, tmp_path: Path) -> None:
    config, port = tmp_path / "down.toml", _closed_port()
    config.write_text(f'[storage]\nurl = "postgresql://relay:s3cret@127.0.0.1:{port}/mail"\nconnect_timeout = 2\n')
    started = time.monotonic()
    r = InProcess(config, inproc.capsys)("status")
    assert time.monotonic() - started < 5
    assert r.code == 1
    assert r.error_line.startswith("mailrelay: error: database unreachable: connection failed")
    assert r.out.split() == ["database", f"postgresql://relay:***@127.0.0.1:{port}/mail", "unreachable"]
    assert "s3cret" not in r.out + r.err
    found = json.loads(InProcess(config, inproc.capsys)("status", "--json").out)
    assert found["database"]["reachable"] is False and found["healthy"] is False


def test_a_missing_sqlite_file_is_reported_and_not_created(inproc: InProcess, tmp_path: Path) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path}/nowhere/mailrelay.db"\n')
    r = InProcess(config, inproc.capsys)("status")
    assert r.code == 1
    assert r.error_line == ("mailrelay: error: database unreachable: no database file there "
                            "(`mailrelay serve` creates it)")
    assert not (tmp_path / "nowhere").exists()
