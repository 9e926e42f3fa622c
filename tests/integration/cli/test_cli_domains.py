"""`mailrelay domain ...` end to end, with `domain verify` asking a real DNS server on loopback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from mailrelay.mailauth.dkimsign import generate_private_key
from tests.support.dnsserver import FakeDNS

from .conftest import CLI, InProcess


def _config(cli: CLI, extra: str) -> None:
    cli.config.write_text(cli.config.read_text() + extra)


def test_domain_lifecycle(cli: CLI) -> None:
    assert cli("account", "create", "alice").code == 0
    r = cli("domain", "list")
    assert (r.code, r.out.strip()) == (0, "no domains; add one with `mailrelay domain add DOMAIN --account NAME`")

    r = cli("domain", "add", "Example.COM", "--account", "alice", "--algorithm", "both")
    assert r.code == 0, r.err
    assert r.out.startswith("added domain example.com to account alice (new DKIM key: rsa selector mr1, "
                            "ed25519 selector mr1-ed)")
    rows = [line.split(None, 2) for line in r.out.splitlines()
            if line.startswith(("TXT  ", "MX  ")) or line.startswith("TXT mr1")]
    assert [(t, n, v.split("p=")[0]) for t, n, v in rows] == [
        ("TXT", "mr1._domainkey.example.com", "v=DKIM1; k=rsa; "),
        ("TXT", "mr1-ed._domainkey.example.com", "v=DKIM1; k=ed25519; "),
        ("TXT", "example.com", f"v=spf1 a:{socket.gethostname().lower()} ~all"),
        ("TXT", "_dmarc.example.com", "v=DMARC1; "),
        ("MX", "example.com", f"10 {socket.gethostname().lower()}."),
    ]
    assert "_dmarc.example.com" in r.out and "`mailrelay domain verify example.com`" in r.out
    assert "PRIVATE" not in r.out

    data = json.loads(cli("domain", "list", "--json").out)
    assert [(d["name"], d["account"], d["algorithms"]) for d in data] == [
        ("example.com", "alice", ["rsa", "ed25519"])]

    r = cli("domain", "show", "example.com")
    assert r.code == 0 and "account:  alice" in r.out and "\nMX  " in r.out
    shown = json.loads(cli("domain", "show", "example.com", "--json").out)
    assert [x["purpose"] for x in shown["dns_records"]] == ["dkim", "dkim", "spf", "dmarc", "mx"]

    r = cli("domain", "add", "example.com", "--account", "alice")
    assert r.code == 2 and "already added to account alice" in r.error_line
    r = cli("domain", "remove", "example.com")
    assert (r.code, r.out.split(";")[0]) == (0, "removed domain example.com from account alice")
    r = cli("domain", "show", "example.com")
    assert r.code == 2 and "no domain named 'example.com'" in r.error_line


def test_import_key_and_mistakes(inproc: InProcess, tmp_path: Path) -> None:
    assert inproc("account", "create", "alice").code == 0
    key = tmp_path / "dkim.pem"
    key.write_bytes(generate_private_key("ed25519"))
    r = inproc("domain", "add", "example.org", "--account", "alice", "--private-key", str(key), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["algorithms"] == ["ed25519"]

    missing = tmp_path / "nope.pem"
    r = inproc("domain", "add", "example.net", "--account", "alice", "--private-key", str(missing))
    assert r.code == 2 and r.error_line == f"mailrelay: error: --private-key {missing}: file not found"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    r = inproc("domain", "add", "example.net", "--account", "alice", "--private-key", str(junk))
    assert r.code == 2 and r.error_line.startswith(f"mailrelay: error: --private-key {junk}: not a PEM")
    r = inproc("domain", "add", "example.net", "--account", "alice", "--private-key", str(key),
               "--algorithm", "rsa")
    assert r.code == 2 and "is an ed25519 key, but --algorithm is rsa" in r.error_line
    r = inproc("domain", "add", "example.net", "--account", "carol")
    assert r.code == 2 and r.error_line == "mailrelay: error: no account named 'carol'"
    r = inproc("domain", "add", "not a domain", "--account", "alice")
    assert r.code == 2 and "invalid domain" in r.error_line
    r = inproc("domain", "list", "--account", "carol")
    assert r.code == 2


def test_verify_against_dns(cli: CLI, fake_dns: FakeDNS) -> None:
    _config(cli, f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 2\n')
    text = cli.config.read_text().replace("[server]\n", '[server]\nhostname = "mail.relay.test"\n')
    cli.config.write_text(text)
    assert cli("account", "create", "alice").code == 0
    assert cli("domain", "add", "example.com", "--account", "alice").code == 0
    records = json.loads(cli("domain", "show", "example.com", "--json").out)["dns_records"]

    r = cli("domain", "verify", "example.com")
    assert r.code == 1, r.err
    assert "4 of 4 records are not in place" in r.out
    assert f"expected: {records[0]['value']}" in r.out

    for rec in records:
        if rec["type"] == "TXT":
            fake_dns.txt(rec["name"], rec["value"])  # the DKIM one is over 255 bytes: split
    fake_dns.mx("example.com", (10, "mail.relay.test"))
    r = cli("domain", "verify", "example.com")
    assert (r.code, r.out.strip().splitlines()[-1]) == (0, "all DNS records of example.com are in place"), r.out
    data = json.loads(cli("domain", "verify", "example.com", "--json").out)
    assert data["ok"] is True and [c["status"] for c in data["checks"]] == ["ok"] * 4
