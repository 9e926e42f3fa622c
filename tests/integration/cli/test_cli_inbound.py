"""`mailrelay domain add --inbound`, `domain inbound` and `address add | list | remove`."""

from __future__ import annotations

import json

import pytest

from .conftest import CLI, InProcess


def test_inbound_domain_and_addresses(inproc: InProcess) -> None:
    """In process (the same code path as `python -m mailrelay`, without the start-up cost)."""
    assert inproc("account", "create", "alice").code == 0
    r = inproc("domain", "add", "in.test", "--account", "alice", "--inbound", "--webhook",
            "https://hooks.example.test/parse", "--raw", "--dmarc", "enforce")
    assert r.code == 0, r.err
    assert ("receiving mail: for known addresses (`mailrelay address add`), posted to "
            "https://hooks.example.test/parse (raw), DMARC enforce") in r.out
    shown = json.loads(inproc("domain", "show", "in.test", "--json").out)
    assert shown["inbound"] == {"enabled": True, "catch_all": False, "raw": True, "dmarc": "enforce",
                                "webhook": "https://hooks.example.test/parse"}

    r = inproc("address", "add", "Ann@IN.test")
    assert (r.code, r.out.strip()) == (0, "added address ann@in.test (account alice)")
    assert inproc("address", "add", "bob@in.test").code == 0
    r = inproc("address", "list")
    assert r.code == 0 and [line.split()[:2] for line in r.out.splitlines()[1:]] == [
        ["ann@in.test", "alice"], ["bob@in.test", "alice"]]
    data = json.loads(inproc("address", "list", "--domain", "in.test", "--json").out)
    assert [a["address"] for a in data] == ["ann@in.test", "bob@in.test"]
    r = inproc("address", "remove", "bob@in.test")
    assert (r.code, r.out.strip()) == (0, "removed address bob@in.test (account alice)")
    assert [a["address"] for a in json.loads(inproc("address", "list", "--json").out)] == ["ann@in.test"]

    r = inproc("domain", "inbound", "in.test", "--no-webhook", "--catch-all", "--parsed", "--dmarc", "monitor")
    assert (r.code, r.out.strip()) == (0, "domain in.test receives mail for any address (catch-all), "
                                          "kept in the inbox, DMARC monitor")
    r = inproc("domain", "show", "in.test")
    assert "inbound:  for any address (catch-all), kept in the inbox, DMARC monitor" in r.out
    r = inproc("domain", "inbound", "in.test", "--off")
    assert (r.code, r.out.strip()) == (0, "domain in.test no longer receives mail (port 25 refuses "
                                          "it as relaying)")
    assert "inbound:  off" in inproc("domain", "show", "in.test").out
    r = inproc("domain", "inbound", "in.test")  # back on, the other settings kept
    assert r.out.strip() == "domain in.test receives mail for any address (catch-all), kept in the inbox, DMARC monitor"


@pytest.mark.parametrize(("args", "error"), [
    (("domain", "add", "x.test", "--account", "alice", "--catch-all"), "--catch-all needs --inbound"),
    (("domain", "add", "x.test", "--account", "alice", "--inbound", "--raw"), "--raw needs --webhook"),
    (("domain", "add", "x.test", "--account", "alice", "--inbound", "--webhook", "ftp://x"),
     "webhook URL must start with http:// or https://"),
    (("domain", "inbound", "nope.test"), "no domain named 'nope.test'"),
    (("domain", "inbound", "in.test", "--off", "--catch-all"), "--off takes no --catch-all/--no-catch-all"),
    (("address", "add", "nobody"), "invalid address 'nobody': expected user@example.com"),
    (("address", "add", "a b@in.test"), "invalid address 'a b@in.test'"),
    (("address", "add", "x@nope.test"), "no domain named 'nope.test'"),
    (("address", "add", "ann@in.test"), "address ann@in.test is already added"),
    (("address", "remove", "zed@in.test"), "no address zed@in.test"),
    (("address", "list", "--account", "nobody"), "no account named 'nobody'"),
])
def test_mistakes_are_one_line_exit_2(inproc: InProcess, args: tuple[str, ...], error: str) -> None:
    assert inproc("account", "create", "alice").code == 0
    assert inproc("domain", "add", "in.test", "--account", "alice", "--inbound").code == 0
    assert inproc("address", "add", "ann@in.test").code == 0
    r = inproc(*args)
    assert r.code == 2, (r.out, r.err)
    assert error in r.error_line


def test_argparse_exclusive_options(inproc: InProcess) -> None:
    r = inproc("domain", "inbound", "in.test", "--webhook", "https://h.test/", "--no-webhook")
    assert r.code == 2 and "not allowed with argument" in r.err


def test_address_note_when_domain_does_not_receive(inproc: InProcess) -> None:
    assert inproc("account", "create", "alice").code == 0
    assert inproc("domain", "add", "out.test", "--account", "alice").code == 0
    r = inproc("address", "add", "x@out.test")
    assert r.code == 0 and "note: out.test does not receive mail yet" in r.out


def test_address_commands_as_a_subprocess(cli: CLI) -> None:
    assert cli("account", "create", "alice").code == 0
    assert cli("domain", "add", "in.test", "--account", "alice", "--inbound").code == 0
    r = cli("address", "add", "ann@in.test")
    assert (r.code, r.out.strip()) == (0, "added address ann@in.test (account alice)")
    r = cli("address", "add", "ann@in.test")
    assert r.code == 2 and "address ann@in.test is already added" in r.error_line
