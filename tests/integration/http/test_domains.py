"""/v3/whitelabel/domains: create, publish the records in a real DNS server on loopback,
validate; a domain is usable for sending (require_own_domain, DKIM) only once verified."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sendgrid import SendGridAPIClient

from tests.integration.cli.conftest import run_cli
from tests.integration.http.conftest import APINode
from tests.support.dnsserver import FakeDNS

PATH = "/v3/whitelabel/domains"
OWN_DOMAIN = "[submission]\nrequire_own_domain = true\n"
NOT_VERIFIED = "The from address does not match a verified Sender Identity"


def dns_toml(fake_dns: FakeDNS) -> str:
    return f'[dns]\nnameservers = ["{fake_dns.address}"]\ntimeout = 1\n'


def mail(sender: str) -> dict[str, Any]:
    return {"personalizations": [{"to": [{"email": "bob@example.net"}]}], "from": {"email": sender},
            "subject": "Hi", "content": [{"type": "text/plain", "value": "Hello"}]}


def publish(fake_dns: FakeDNS, dns: dict[str, Any]) -> None:
    for entry in dns.values():
        if entry["type"] == "txt":
            fake_dns.txt(entry["host"], entry["data"])
        else:
            assert entry["type"] == "mx"
            preference, host = entry["data"].split()
            fake_dns.mx(entry["host"], (int(preference), host.rstrip(".")))


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """The sender domain cache reloads a missing domain at most once a second."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_create_publish_validate_then_send_and_sign(api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(OWN_DOMAIN + dns_toml(fake_dns))
    alice = api.node.app.accounts.get("alice")
    assert alice is not None
    with api.client(api.key()) as http:
        r = http.post(PATH, json={"domain": "Sender.Test", "subdomain": "em", "automatic_security": False,
                                  "custom_spf": False, "default": True, "unknown": 1})
        assert r.status_code == 201, r.text
        created = r.json()
        assert {k: created[k] for k in ("domain", "subdomain", "username", "user_id", "ips", "valid",
                                        "automatic_security", "legacy")} == {
            "domain": "sender.test", "subdomain": "", "username": "alice", "user_id": alice.id, "ips": [],
            "valid": False, "automatic_security": False, "legacy": False}
        dns = created["dns"]
        assert list(dns) == ["dkim1", "spf", "dmarc", "mail_server"]
        assert dns["dkim1"]["host"] == "mr1._domainkey.sender.test" and dns["dkim1"]["type"] == "txt"
        assert dns["dkim1"]["data"].startswith("v=DKIM1; k=rsa; p=")
        assert dns["mail_server"] == {"valid": False, "type": "mx", "host": "sender.test",
                                      "data": "10 mx.mailrelay.test."}
        domain_id = created["id"]

        # Unverified: not a sender domain yet, and not signed for.
        r = http.post("/v3/mail/send", json=mail("alice@sender.test"))
        assert r.status_code == 403 and r.json()["errors"][0]["message"].startswith(NOT_VERIFIED)
        msg = b"From: alice@sender.test\r\nTo: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n"
        assert api.node.app.signer(alice.id, msg) == b""

        r = http.post(f"{PATH}/{domain_id}/validate")
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["id"] == domain_id and result["valid"] is False
        assert list(result["validation_results"]) == list(dns)
        assert all(v["valid"] is False and v["reason"] for v in result["validation_results"].values())
        assert "mr1._domainkey.sender.test" in result["validation_results"]["dkim1"]["reason"]
        assert api.node.app.domains.require("sender.test").verified_at is None

        publish(fake_dns, dns)
        r = http.post(f"{PATH}/{domain_id}/validate")
        assert r.json() == {"id": domain_id, "valid": True, "validation_results": {
            name: {"valid": True, "reason": None} for name in dns}}
        assert api.node.app.domains.require("sender.test").verified_at is not None
        got = http.get(f"{PATH}/{domain_id}").json()
        assert got["valid"] is True and all(e["valid"] for e in got["dns"].values())

        assert eventually(lambda: http.post("/v3/mail/send", json=mail("alice@sender.test")).status_code == 202)
        # news.sender.test is covered by its verified parent
        assert http.post("/v3/mail/send", json=mail("n@news.sender.test")).status_code == 202
    assert len(api.node.stored()) == 2
    assert api.node.app.signer(alice.id, msg).startswith(b"DKIM-Signature: ")


def test_unverified_domain_is_refused_550_over_smtp_until_forced(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(OWN_DOMAIN + dns_toml(fake_dns))
    with api.client(api.key()) as http:
        assert http.post(PATH, json={"domain": "closed.test"}).status_code == 201

    def smtp_send() -> tuple[int, bytes]:
        client = api.node.submission()
        client.mail("alice@closed.test")
        client.rcpt("bob@example.net")
        code, text = client.data(b"From: alice@closed.test\r\nSubject: x\r\n\r\nbody\r\n")
        client.quit()
        return code, text

    code, text = smtp_send()
    assert code == 550 and b"not a verified sender domain of account alice" in text, text
    assert b"mailrelay domain verify" in text

    r = run_cli("-c", api.node.app.settings.source, "domain", "verify", "closed.test", "--force",
                cwd=Path(api.node.app.settings.source).parent)
    assert r.code == 0 and "marked verified WITHOUT checking its DNS records" in r.out, r.err
    assert fake_dns.queries == []
    assert eventually(lambda: smtp_send()[0] == 250)


def test_someone_elses_name_is_refused_and_an_unverifiable_one_never_sends(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(OWN_DOMAIN + dns_toml(fake_dns))
    with api.client(api.key("alice")) as alice, api.client(api.key("bob")) as bob:
        r = alice.post(PATH, json={"domain": "gmail.com"})
        assert r.status_code == 201
        gmail = r.json()["id"]
        r = bob.post(PATH, json={"domain": "gmail.com"})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "domain"
        assert "already taken by another account" in r.json()["errors"][0]["message"]
        assert bob.post(PATH, json={"domain": "mail.gmail.com"}).status_code == 400  # overlaps

        # alice cannot publish records under gmail.com: it never validates, never sends
        assert alice.post(f"{PATH}/{gmail}/validate").json()["valid"] is False
        r = alice.post("/v3/mail/send", json=mail("someone@gmail.com"))
        assert r.status_code == 403 and r.json()["errors"][0]["message"].startswith(NOT_VERIFIED)
    assert api.node.stored() == []


def test_another_accounts_domain_is_404_and_delete_is_204(api_factory: Callable[..., APINode],
                                                          fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    with api.client(api.key("alice")) as alice, api.client(api.key("bob")) as bob:
        mine = alice.post(PATH, json={"domain": "alice.test"}).json()["id"]
        assert bob.post(PATH, json={"domain": "bob.test"}).status_code == 201
        for method, path in (("GET", f"{PATH}/{mine}"), ("DELETE", f"{PATH}/{mine}"),
                             ("POST", f"{PATH}/{mine}/validate"), ("GET", f"{PATH}/999999")):
            r = bob.request(method, path)
            assert (r.status_code, r.json()) == (404, {"errors": [{"message": "not found", "field": None,
                                                                   "help": None}]}), (method, path)
        assert [d["domain"] for d in bob.get(PATH).json()] == ["bob.test"]
        assert fake_dns.queries == [], "bob's validate of alice's domain asked nothing"
        assert [d["domain"] for d in alice.get(PATH, params={"domain": "alice.test"}).json()] == ["alice.test"]
        assert alice.get(PATH, params={"limit": 1, "offset": 1}).json() == []

        r = alice.delete(f"{PATH}/{mine}")
        assert (r.status_code, r.content) == (204, b"")
        assert alice.get(f"{PATH}/{mine}").status_code == 404
        assert api.node.app.domains.get("alice.test") is None
        assert api.node.app.domains.get("bob.test") is not None


def test_scopes(api: APINode) -> None:
    with api.client(api.key(scopes=["whitelabel.read"])) as reader, \
            api.client(api.key(scopes=["mail.send"])) as sender:
        assert reader.get(PATH).status_code == 200
        assert reader.post(PATH, json={"domain": "x.test"}).status_code == 403
        assert sender.get(PATH).status_code == 403
    with api.client(api.key(scopes=["whitelabel.create"])) as creator:
        r = creator.post(PATH, json={"domain": "x.test"})
        assert r.status_code == 201
        domain_id = r.json()["id"]
        assert creator.post(f"{PATH}/{domain_id}/validate").status_code == 403
        assert creator.delete(f"{PATH}/{domain_id}").status_code == 403


def test_bad_input_is_400_with_the_field(api: APINode) -> None:
    with api.client(api.key()) as http:
        for body, field in (({"domain": "not a domain"}, "domain"), ({}, "domain"),
                            ({"domain": "ok.test", "custom_dkim_selector": "bad selector"},
                             "custom_dkim_selector")):
            r = http.post(PATH, json=body)
            assert r.status_code == 400 and r.json()["errors"][0]["field"] == field, (body, r.text)
        assert http.get(f"{PATH}/abc").status_code == 400
    assert api.node.app.domains.list() == []


def test_validate_is_bounded_when_dns_does_not_answer(api_factory: Callable[..., APINode],
                                                      fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    with api.client(api.key()) as http:
        created = http.post(PATH, json={"domain": "slow.test", "custom_dkim_selector": "s2024"}).json()
        assert created["dns"]["dkim1"]["host"] == "s2024._domainkey.slow.test"
        publish(fake_dns, created["dns"])
        fake_dns.timeout("_dmarc.slow.test")
        start = time.monotonic()
        r = http.post(f"{PATH}/{created['id']}/validate")
        spent = time.monotonic() - start
    assert spent < 4.0, spent  # [dns] timeout = 1: records are asked together, each bounded
    results = r.json()["validation_results"]
    assert r.json()["valid"] is False and results["dkim1"] == {"valid": True, "reason": None}
    assert results["dmarc"]["valid"] is False and "DNS lookup of _dmarc.slow.test failed" in results["dmarc"]["reason"]
    assert api.node.app.domains.require("slow.test").verified_at is None


def test_sendgrids_python_client(api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    sg = SendGridAPIClient(api_key=api.key(), host=api.url)
    r = sg.client.whitelabel.domains.post(request_body={"domain": "lib.test", "automatic_security": True})
    assert r.status_code == 201
    created = json.loads(r.body)
    publish(fake_dns, created["dns"])
    r = sg.client.whitelabel.domains._(created["id"]).validate.post()
    assert r.status_code == 200 and json.loads(r.body)["valid"] is True
    r = sg.client.whitelabel.domains.get()
    assert [d["valid"] for d in json.loads(r.body)] == [True]
