"""`mailrelay account ...` end to end; the password checks use the real (slow) hasher."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.store.db import create_engine

from .conftest import CLI, InProcess


@pytest.fixture
def service(db_url: str) -> Iterator[AccountService]:
    """The service on the database the CLI writes to, to check what it stored."""
    engine = create_engine(db_url)
    yield AccountService(engine, make_hasher())
    engine.dispose()


def test_account_lifecycle(cli: CLI, service: AccountService) -> None:
    r = cli("account", "list")
    assert (r.code, r.out.strip()) == (0, "no accounts; create one with "
                                          "`mailrelay account create NAME`")

    r = cli("account", "create", "alice", "--password-stdin", "--plan", "unlimited",
            stdin="alice-password-1\n")
    assert (r.code, r.out) == (0, "created account alice (plan unlimited)\n")

    # No TTY and no --password-stdin: a password is generated and printed once.
    r = cli("account", "create", "bob")
    assert r.code == 0, r.err
    generated = next(line.split(": ", 1)[1] for line in r.out.splitlines()
                     if line.startswith("password: "))
    assert len(generated) == 24 and "cannot be shown again" in r.out

    assert service.authenticate("alice", "alice-password-1") is not None
    assert service.authenticate("bob", generated) is not None

    r = cli("account", "disable", "alice")
    assert (r.code, r.out) == (0, "account alice is now disabled\n")
    table = cli("account", "list").out.splitlines()
    assert table[0].split() == ["NAME", "PLAN", "STATUS", "KEYS", "CREATED"]
    assert table[1].split()[:4] == ["alice", "unlimited", "disabled", "0"]
    assert table[2].split()[:4] == ["bob", "free", "active", "0"]
    assert len({line.index("STATUS") if i == 0 else line.index(row_status)
                for i, (line, row_status) in enumerate(
                    zip(table, ["", "disabled", "active"], strict=True))}) == 1  # aligned
    assert service.authenticate("alice", "alice-password-1") is None

    assert cli("account", "enable", "alice").code == 0
    r = cli("account", "passwd", "alice", "--password-stdin", stdin="alice-password-2\n")
    assert (r.code, r.out) == (0, "password changed for account alice\n")
    assert service.authenticate("alice", "alice-password-2") is not None

    data = json.loads(cli("account", "list", "--json").out)
    assert [(a["name"], a["plan"], a["status"], a["keys"]) for a in data] == [
        ("alice", "unlimited", "active", 0), ("bob", "free", "active", 0)]
    assert all(isinstance(a["created_at"], float) for a in data)


def test_api_keys(cli: CLI, service: AccountService) -> None:
    assert cli("account", "create", "alice").code == 0
    r = cli("account", "key", "create", "alice", "--label", "deploy bot")
    assert r.code == 0, r.err
    key = next(line.split(": ", 1)[1] for line in r.out.splitlines() if line.startswith("key: "))
    key_id = key.split(".")[1]
    assert key == f"SG.{key_id}.{key.split('.')[2]}" and len(key) == 69  # SendGrid's format
    assert f"created API key {key_id} for account alice" in r.out
    assert "scopes:" not in r.out  # a full-access key's output is as before
    assert "cannot be shown again" in r.out

    assert service.authenticate("apikey", key) is not None

    r = cli("account", "key", "list")
    assert r.code == 0 and key not in r.out and key.split(".")[2] not in r.out
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "ACCOUNT", "LABEL", "STATUS", "CREATED", "LAST", "USED",
                                "SCOPES"]
    assert lines[1].startswith(f"{key_id}  alice    deploy bot  active")
    assert lines[1].endswith("  full access")
    assert json.loads(cli("account", "list", "--json").out)[0]["keys"] == 1

    r = cli("account", "key", "revoke", key_id)
    assert (r.code, r.out) == (0, f"revoked API key {key_id} of account alice\n")
    keys = json.loads(cli("account", "key", "list", "alice", "--json").out)
    assert [(k["id"], k["status"], k["label"]) for k in keys] == [
        (key_id, "revoked", "deploy bot")]
    assert isinstance(keys[0]["revoked_at"], float) and keys[0]["last_used_at"] is not None
    assert keys[0]["scopes"] is None  # full access
    assert service.authenticate("apikey", key) is None


def test_api_key_with_scopes(cli: CLI, service: AccountService) -> None:
    assert cli("account", "create", "alice").code == 0
    r = cli("account", "key", "create", "alice", "--label", "reader",
            "--scopes", "stats.read, suppression.read,stats.read")
    assert r.code == 0, r.err
    key = next(line.split(": ", 1)[1] for line in r.out.splitlines() if line.startswith("key: "))
    key_id = key.split(".")[1]
    assert "scopes: stats.read,suppression.read\n" in r.out
    alice = service.get("alice")
    assert service.authenticate_key(key) == (alice, frozenset({"stats.read", "suppression.read"}))
    assert service.authenticate("apikey", key) is None  # no mail.send: no SMTP login

    r = cli("account", "key", "create", "alice", "--scopes", "mail.send")
    assert r.code == 0, r.err
    sender = next(line.split(": ", 1)[1] for line in r.out.splitlines() if line.startswith("key: "))
    assert service.authenticate("apikey", sender) == alice

    lines = cli("account", "key", "list", "alice").out.splitlines()
    assert lines[0].split()[-1] == "SCOPES"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows[key_id].endswith("  stats.read,suppression.read")
    assert rows[sender.split(".")[1]].endswith("  mail.send")
    listed = json.loads(cli("account", "key", "list", "alice", "--json").out)
    assert {k["id"]: k["scopes"] for k in listed} == {
        key_id: ["stats.read", "suppression.read"], sender.split(".")[1]: ["mail.send"]}


def test_api_key_scope_mistakes_exit_2_and_create_nothing(cli: CLI, inproc: InProcess,
                                                          service: AccountService) -> None:
    assert cli("account", "create", "alice").code == 0
    r = cli("account", "key", "create", "alice", "--scopes", "mail.send,mail.snd")
    assert r.code == 2 and "unknown scope 'mail.snd'" in r.error_line
    r = inproc("account", "key", "create", "alice", "--scopes", " , ")
    assert r.code == 2 and "--scopes" in r.error_line
    assert service.list_keys("alice") == []


def test_mistakes_about_stored_things_exit_2_with_one_line(cli: CLI, inproc: InProcess) -> None:
    r = cli("account", "create", "alice", "--password-stdin", stdin="alice-password\n")
    assert r.code == 0
    r = cli("account", "key", "revoke", "AAAAAAAAAAAAAAAA")  # one of them in a subprocess
    assert r.code == 2 and "no API key with id 'AAAAAAAAAAAAAAAA'" in r.error_line
    cases = [
        (("account", "create", "alice"), "account 'alice' already exists"),
        (("account", "disable", "ghost"), "no account named 'ghost'"),
        (("account", "key", "create", "ghost"), "no account named 'ghost'"),
        (("account", "key", "revoke", "AAAAAAAAAAAAAAAA"), "no API key with id"),
        (("queue", "show", "NOSUCHID"), "no message with queue id 'NOSUCHID'"),
        (("account", "key", "list", "ghost"), "no account named 'ghost'"),
        (("account", "passwd", "ghost"), "no account named 'ghost'"),
    ]
    for args, message in cases:
        r = inproc(*args)
        assert r.code == 2, (args, r)
        assert message in r.error_line, (args, r.err)


def test_password_stdin_rules(cli: CLI) -> None:
    r = cli("account", "create", "alice", "--password-stdin", stdin="")
    assert r.code == 2 and "no password on the first line" in r.error_line
    r = cli("account", "create", "alice", "--password-stdin", stdin="short\n")
    assert r.code == 2 and "password too short" in r.error_line
    assert "alice" not in cli("account", "list").out  # nothing was created
