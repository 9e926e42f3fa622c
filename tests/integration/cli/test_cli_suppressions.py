"""`mailrelay suppression ...` end to end, on both databases.

A few commands run in a subprocess, the rest in process (same code path, no interpreter
start); accounts are inserted directly, skipping the deliberately slow password hashing.
"""

from __future__ import annotations

import json

from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts

from .conftest import CLI, InProcess


def make_accounts(db_url: str, *names: str) -> None:
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        for name in names:
            conn.execute(accounts.insert().values(name=name, password_hash="$argon2id$x",
                                                  created_at=0.0, updated_at=0.0))
    engine.dispose()


def test_suppression_lifecycle(cli: CLI, inproc: InProcess, db_url: str) -> None:
    r = inproc("suppression", "list")
    assert (r.code, r.out) == (0, "no suppressed addresses\n")
    make_accounts(db_url, "alice", "bob")

    r = cli("suppression", "add", "alice", "Carol@Example.net", "--reason", "asked to stop")
    assert (r.code, r.out) == (0, "suppressed carol@example.net for account alice\n"), r.err
    r = inproc("suppression", "add", "alice", "carol@example.net")
    assert r.code == 0 and r.out.startswith("carol@example.net was already suppressed for account "
                                            "alice (since ")
    assert inproc("suppression", "add", "bob", "dan@example.com").code == 0

    lines = cli("suppression", "list").out.splitlines()
    assert lines[0].split() == ["ACCOUNT", "ADDRESS", "REASON", "ADDED"]
    assert lines[1].startswith("alice    carol@example.net  asked to stop  ")
    assert lines[2].startswith("bob      dan@example.com    -              ")
    assert len(lines) == 3

    data = json.loads(inproc("suppression", "list", "--account", "alice", "--json").out)
    assert [(d["account"], d["address"], d["reason"]) for d in data] == [
        ("alice", "carol@example.net", "asked to stop")]
    assert isinstance(data[0]["created_at"], float)

    r = inproc("suppression", "remove", "alice", "CAROL@example.net")
    assert (r.code, r.out) == (0, "removed carol@example.net from the suppression list of "
                                  "account alice\n")
    r = inproc("suppression", "list", "--account", "alice")
    assert (r.code, r.out) == (0, "no suppressed addresses for account alice\n")


def test_mistakes_exit_2_with_one_line(cli: CLI, inproc: InProcess, db_url: str) -> None:
    make_accounts(db_url, "alice")
    r = cli("suppression", "remove", "alice", "nobody@example.net")  # one in a subprocess
    assert r.code == 2
    assert "nobody@example.net is not on the suppression list of account 'alice'" in r.error_line
    cases = [
        (("suppression", "add", "ghost", "x@example.net"), "no account named 'ghost'"),
        (("suppression", "remove", "ghost", "x@example.net"), "no account named 'ghost'"),
        (("suppression", "list", "--account", "ghost"), "no account named 'ghost'"),
        (("suppression", "add", "alice", "not-an-address"), "not an email address: 'not-an-address'"),
        (("suppression", "remove", "alice", "x@"), "not an email address"),
        (("suppression", "add", "alice", "x@example.net", "--reason", "r" * 501), "reason too long"),
        (("suppression", "add", "alice"), "the following arguments are required: ADDRESS"),
        (("suppression",), "the following arguments are required: COMMAND"),
    ]
    for args, message in cases:
        r = inproc(*args)
        assert r.code == 2, (args, r)
        assert message in r.error_line, (args, r.err)
    assert inproc("suppression", "list").out == "no suppressed addresses\n"  # nothing stored


def test_stored_text_cannot_drive_the_terminal(cli: CLI, inproc: InProcess, db_url: str) -> None:
    make_accounts(db_url, "alice")
    r = inproc("suppression", "add", "alice", "x@example.net", "--reason", "bad\x1b[2Jreason")
    assert r.code == 0
    out = inproc("suppression", "list").out
    assert "\x1b" not in out and "bad" in out
