"""A sender domain is added unverified; `domain verify` marks it verified only when its DNS
records are in place (asked of a real DNS server on loopback), `--force` without asking."""

from __future__ import annotations

import json

from tests.support.dnsserver import FakeDNS

from .conftest import CLI, InProcess


def _use_dns(config_owner: CLI | InProcess, fake_dns: FakeDNS) -> None:
    text = config_owner.config.read_text().replace("[server]\n", '[server]\nhostname = "mail.relay.test"\n')
    config_owner.config.write_text(text + f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 2\n')


def _verified(inproc: InProcess, name: str) -> bool:
    [found] = [d for d in json.loads(inproc("domain", "list", "--json").out) if d["name"] == name]
    flag: bool = found["verified"]
    assert flag is (found["verified_at"] is not None)
    return flag


def test_add_leaves_it_unverified_and_verify_marks_it_once_records_are_in_place(
        inproc: InProcess, fake_dns: FakeDNS) -> None:
    _use_dns(inproc, fake_dns)
    assert inproc("account", "create", "alice").code == 0
    r = inproc("domain", "add", "example.com", "--account", "alice")
    assert r.code == 0 and "cannot be used for sending until they are in place" in r.out
    assert not _verified(inproc, "example.com")
    assert "verified: no (not used for sending" in inproc("domain", "show", "example.com").out
    assert "example.com  alice    no " in inproc("domain", "list").out

    records = json.loads(inproc("domain", "show", "example.com", "--json").out)["dns_records"]
    fake_dns.txt(records[0]["name"], records[0]["value"])  # only the DKIM key so far
    r = inproc("domain", "verify", "example.com")
    assert r.code == 1
    assert ("3 of 4 records are not in place yet (SPF TXT example.com, DMARC TXT _dmarc.example.com, "
            "MX MX example.com)") in r.out
    assert "domain example.com stays unverified: it is not used for sending" in r.out
    assert not _verified(inproc, "example.com")

    for rec in records[1:]:
        if rec["type"] == "TXT":
            fake_dns.txt(rec["name"], rec["value"])
    fake_dns.mx("example.com", (10, "mail.relay.test"))
    r = inproc("domain", "verify", "example.com")
    assert r.code == 0, r.out
    assert "domain example.com is verified: it is used for sending" in r.out
    assert _verified(inproc, "example.com")
    assert "verified: yes, since " in inproc("domain", "show", "example.com").out

    # A later failed check does not take it back (a DNS hiccup must not stop a sender).
    fake_dns.clear()
    r = inproc("domain", "verify", "example.com", "--json")
    data = json.loads(r.out)
    assert r.code == 1 and data["ok"] is False and data["verified"] is True and data["forced"] is False
    assert _verified(inproc, "example.com")


def test_force_marks_verified_without_asking_dns(cli: CLI, fake_dns: FakeDNS) -> None:
    _use_dns(cli, fake_dns)
    assert cli("account", "create", "alice").code == 0
    assert cli("domain", "add", "closed.test", "--account", "alice").code == 0
    r = cli("domain", "verify", "closed.test", "--force")
    assert r.code == 0, r.err
    assert r.out.startswith("domain closed.test is marked verified WITHOUT checking its DNS records (--force)")
    assert fake_dns.queries == [], "--force asks no DNS"
    data = json.loads(cli("domain", "show", "closed.test", "--json").out)
    assert data["verified"] is True and data["verified_at"] > 0
    r = cli("domain", "verify", "nope.test", "--force")
    assert r.code == 2 and "no domain named 'nope.test'" in r.error_line


def test_someone_elses_domain_cannot_be_taken_or_used_without_its_dns(
        inproc: InProcess, fake_dns: FakeDNS) -> None:
    _use_dns(inproc, fake_dns)
    assert inproc("account", "create", "mallory").code == 0
    assert inproc("account", "create", "alice").code == 0
    assert inproc("domain", "add", "gmail.com", "--account", "mallory").code == 0
    r = inproc("domain", "add", "gmail.com", "--account", "alice")
    assert r.code == 2 and "already taken by another account" in r.error_line
    # Adding it proved nothing: mallory cannot publish records under gmail.com, so it stays
    # unverified (and so unusable for sending; see tests/integration/http/test_domains.py).
    assert inproc("domain", "verify", "gmail.com").code == 1
    assert not _verified(inproc, "gmail.com")
