"""`mailrelay account webhook` and `mailrelay events`, end to end on both databases."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import accounts, events
from tests.integration.cli.conftest import CLI, InProcess, clean_env, cli, inproc  # noqa: F401 - fixtures

T = 1_700_000_000.0


def make_account(db_url: str, name: str = "alice") -> sa.Engine:
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(accounts.insert().values(name=name, password_hash="$argon2id$x", created_at=T, updated_at=T))
    return engine


def add(engine: sa.Engine, type_: str, *, message: str = "Q1", at: float = T, **kw: object) -> None:
    with engine.begin() as conn:
        add_events(conn, [{"account_id": 1, "message_id": message, "recipient": "bob@dest.test", "type": type_,
                           "at": at, **kw}])


def test_account_webhook(cli: CLI, inproc: InProcess, db_url: str) -> None:  # noqa: F811
    engine = make_account(db_url)
    r = inproc("account", "webhook", "alice")
    assert (r.code, r.out) == (0, "account alice: no event webhook; set one with "
                                  "`mailrelay account webhook alice URL`\n")
    r = cli("account", "webhook", "alice", "https://hooks.example/mr?k=1")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0].startswith("account alice: events are posted to https://hooks.example/mr?k=1")
    assert "--show-secret" in r.out and "signing secret: set" in r.out
    secret = json.loads(inproc("account", "webhook", "alice", "--show-secret", "--json").out)["secret"]
    assert len(secret) >= 40
    assert f"signing secret: {secret}" in inproc("account", "webhook", "alice", "--show-secret").out
    r = inproc("account", "webhook", "alice", "https://other.example/x")
    assert json.loads(inproc("account", "webhook", "alice", "--show-secret", "--json").out)["secret"] == secret, \
        "changing the URL keeps the secret"
    rotated = inproc("account", "webhook", "alice", "--rotate-secret").out
    assert "signing secret: " in rotated and secret not in rotated
    for bad in ("ftp://x.example/", "not a url", "https://", "http://x.example/#frag"):
        r = inproc("account", "webhook", "alice", bad)
        assert r.code == 2 and r.error_line.startswith("mailrelay: error: webhook URL"), bad
    assert inproc("account", "webhook", "nobody").error_line == "mailrelay: error: no account named 'nobody'"
    add(engine, "processed")
    add(engine, "delivered")
    r = inproc("account", "webhook", "alice", "--off")
    assert (r.code, r.out) == (0, "account alice: event webhook off; 2 pending events will not be posted\n")
    with engine.connect() as conn:
        assert conn.execute(sa.select(events.c.webhook_due_at)).scalars().all() == [None, None]
    assert json.loads(inproc("account", "webhook", "alice", "--json").out) == {
        "account": "alice", "url": None, "enabled": False, "secret_set": True}
    # switched off through the API (the URL kept): the CLI says so, and setting a URL switches it on
    assert inproc("account", "webhook", "alice", "https://x.example/h").code == 0
    with engine.begin() as conn:
        conn.execute(accounts.update().values(webhook_enabled=False))
    r = inproc("account", "webhook", "alice")
    assert "is switched off (through the API)" in r.out and "events are posted" not in r.out
    assert json.loads(inproc("account", "webhook", "alice", "--json").out)["enabled"] is False
    assert "from now on" in inproc("account", "webhook", "alice", "https://x.example/h").out
    assert json.loads(inproc("account", "webhook", "alice", "--json").out)["enabled"] is True
    assert inproc("account", "webhook", "alice", "--off", "https://x.example/").code == 2
    engine.dispose()


def test_events_table_filters_and_json(inproc: InProcess, db_url: str) -> None:  # noqa: F811
    engine = make_account(db_url)
    assert inproc("events").out == "no events\n"
    add(engine, "processed")
    add(engine, "deferred", at=T + 60, attempt=1, reply="451 4.3.0 try again " + "x" * 300, mx_host="mx.dest.test")
    add(engine, "delivered", at=T + 120, attempt=2, reply="250 2.0.0 OK", mx_host="mx.dest.test")
    add(engine, "processed", message="Q2", at=T + 130)
    r = inproc("events")
    lines = r.out.splitlines()
    assert lines[0].split() == ["TIME", "ACCOUNT", "MESSAGE", "RECIPIENT", "EVENT", "ATTEMPT", "MX", "REPLY"]
    assert [ln.split()[5] for ln in lines[1:]] == ["processed", "deferred", "delivered", "processed"]
    assert lines[1].startswith("2023-11-14 22:13:20  alice")
    assert "…" in lines[2] and len(lines[2]) < 300, "long replies are cut to fit"
    assert [ln.split()[5] for ln in inproc("events", "--limit", "2").out.splitlines()[1:]] == \
        ["delivered", "processed"], "the newest N, oldest first"
    data = json.loads(inproc("events", "--message", "Q1", "--type", "delivered", "--json").out)
    assert [(d["type"], d["attempt"], d["mx_host"], d["account"]) for d in data] == \
        [("delivered", 2, "mx.dest.test", "alice")]
    assert inproc("events", "--account", "nobody").error_line == "mailrelay: error: no account named 'nobody'"
    assert inproc("events", "--limit", "0").code == 2
    engine.dispose()


def test_events_follow_until_ctrl_c(cli: CLI, db_url: str) -> None:  # noqa: F811
    engine = make_account(db_url)
    add(engine, "processed")
    proc = subprocess.Popen([sys.executable, "-m", "mailrelay", "-c", str(cli.config), "events", "--follow"],
                            cwd=cli.config.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        time.sleep(1.5)
        add(engine, "delivered", message="Q9", reply="250 ok")
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = out.splitlines()
    assert "processed" in lines[1] and "Q9" in lines[-1] and "delivered" in lines[-1]
    engine.dispose()
