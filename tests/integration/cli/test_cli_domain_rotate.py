"""`mailrelay domain rotate` in a subprocess: start prints the next key's record, --finish
switches only once a real DNS server on loopback holds it (or with --force), --cancel drops it."""

from __future__ import annotations

import json

from tests.support.dnsserver import FakeDNS

from .conftest import CLI, InProcess


def test_rotate_start_finish_cancel(cli: CLI, inproc: InProcess, fake_dns: FakeDNS) -> None:
    cli.config.write_text(cli.config.read_text() + f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 1\n')
    assert inproc("account", "create", "alice").code == 0
    assert inproc("domain", "add", "example.com", "--account", "alice").code == 0

    r = cli("domain", "rotate", "example.com", "--selector", "Next1")
    assert r.code == 0, r.err
    assert "rotation of example.com started: new rsa key under selector next1" in r.out
    assert "mail is still signed with selector mr1" in r.out
    assert "next1._domainkey.example.com" in r.out and "v=DKIM1; k=rsa; p=" in r.out
    shown = inproc("domain", "show", "example.com").out
    assert "rotation: next key under selector next1 since " in shown
    assert "next1._domainkey.example.com (next key: publish now)" in shown
    rotation = json.loads(inproc("domain", "show", "example.com", "--json").out)["rotation"]
    [next_key] = rotation["next_dkim"]
    assert rotation["next_selector"] == "next1" and next_key["selector"] == "next1"

    r = cli("domain", "rotate", "example.com", "--finish")
    assert r.code == 1 and "DKIM TXT next1._domainkey.example.com: missing" in r.out
    assert "not in place yet: mail is still signed with selector mr1" in r.out
    fake_dns.txt("next1._domainkey.example.com", next_key["record"])
    r = cli("domain", "rotate", "example.com", "--finish")
    assert r.code == 0, r.out + r.err
    assert "domain example.com now signs with selector next1 (its record is in place)" in r.out
    assert "keep the TXT record of selector mr1 a few days" in r.out
    assert "rotation: none; selector mr1 retired " in inproc("domain", "show", "example.com").out

    # Mistakes: one line, exit 2, no traceback (a subprocess for one, in-process for the rest).
    r = cli("domain", "rotate", "example.com", "--finish")
    assert r.code == 2 and "is not rotating its DKIM key" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    for args, why in (
                      (("--cancel",), "is not rotating its DKIM key"),
                      (("--force",), "--force goes with --finish"),
                      (("--selector", "next1"), "selector next1 is in use"),
                      (("--selector", "bad selector!"), "selector")):
        r = inproc("domain", "rotate", "example.com", *args)
        assert r.code == 2 and why in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err
    r = inproc("domain", "rotate", "nope.example")
    assert r.code == 2 and "no domain named 'nope.example'" in r.err

    assert inproc("domain", "rotate", "example.com").code == 0  # default selector: mrYYYYMM
    r = inproc("domain", "rotate", "example.com", "--cancel")
    assert r.code == 0 and "rotation of example.com cancelled" in r.out
    assert json.loads(inproc("domain", "show", "example.com", "--json").out)["rotation"]["next_selector"] is None

    assert inproc("domain", "rotate", "example.com", "--selector", "closed").code == 0
    r = inproc("domain", "rotate", "example.com", "--finish", "--force", "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["forced"] is True and data["selector"] == "closed" and data["checks"] == []
    assert data["rotation"]["previous_selectors"] == ["next1"]
