"""The domains pages over real HTTP: list, add, the records to publish, and their check against a
real DNS server on loopback (FakeDNS)."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import dkim
import httpx

from tests.integration.delivery.test_dkim_and_domains import dns_lookup
from tests.integration.http.conftest import APINode
from tests.integration.http.test_domains import dns_toml, publish
from tests.integration.web.support import HOSTILE, browser, form_token, sign_in
from tests.support.dnsserver import FakeDNS

API_PATH = "/v3/whitelabel/domains"


def add(http: httpx.Client, domain: str, selector: str = "") -> httpx.Response:
    token = form_token(http.get("/domains"))
    return http.post("/domains", data={"csrf": token, "domain": domain, "selector": selector})


def verify(http: httpx.Client, domain: str) -> httpx.Response:
    token = form_token(http.get(f"/domains/{domain}"))
    return http.post(f"/domains/{domain}/verify", data={"csrf": token})


def statuses(page: httpx.Response) -> list[str]:
    return re.findall(r'<td class="check" data-status="(\w+)">', page.text)


def api_dns(api: APINode, account: str = "alice") -> dict[str, Any]:
    """The records the API gives for the account's one domain: the page must show the same."""
    with api.client(api.key(account)) as http:
        [domain] = http.get(API_PATH).json()
    dns: dict[str, Any] = domain["dns"]
    return dns


def test_add_a_domain_and_see_the_records_the_api_gives(api: APINode) -> None:
    with browser(api) as http:
        sign_in(http)
        assert "No domains yet" in http.get("/domains").text
        r = add(http, "Sender.Test", "s2026")
        assert r.status_code == 303 and r.headers["location"] == "/domains/sender.test?notice=domain-added"
        page = http.get(r.headers["location"])
        listing = http.get("/domains").text
    assert page.status_code == 200 and "Publish the records below" in page.text
    dns = api_dns(api)
    assert list(dns) == ["dkim1", "spf", "dmarc", "mail_server"]
    assert dns["dkim1"]["host"] == "s2026._domainkey.sender.test"
    text = html.unescape(page.text)
    for entry in dns.values():
        assert f">{entry['host']}</code>" in text and f">{entry['data']}</code>" in text, entry
    assert page.text.count('class="copy"') == 2 * len(dns) and '<script src="/static/copy.js">' in page.text
    assert "Not verified" in page.text and "data-status" not in page.text  # nothing checked yet
    assert 'href="/domains/sender.test"' in listing and "Not verified" in listing and "s2026" in listing
    assert api.node.app.domains.require("sender.test").account_name == "alice"


def test_refused_adds_say_why_and_another_accounts_domain_is_not_there(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    api.node.app.domains.add("bob.test", "bob")
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/domains"))
        assert "bob.test" not in http.get("/domains").text
        for name in ("bob.test", "BOB.test.", "nope.test", "not a domain", "x" * 300):
            r = http.get(f"/domains/{name}")
            assert r.status_code == 404 and "no such domain" in r.text, name
            assert http.post(f"/domains/{name}/verify", data={"csrf": token}).status_code == 404, name
        assert http.post("/domains/bob.test/verify", data={"csrf": "forged"}).status_code == 403
        assert fake_dns.queries == [], "nothing was asked about bob's domain"

        for domain, selector, why in (("not a domain", "", "invalid domain"),
                                      (HOSTILE, "", "invalid domain &#39;&lt;script&gt;"),
                                      ("bob.test", "", "taken by another account"),
                                      ("mail.bob.test", "", "overlaps bob.test"),
                                      ("ok.test", "bad selector!", "selector"),
                                      ("x" * 250 + ".test", "", "too long")):
            r = add(http, domain, selector)
            assert r.status_code == 400 and why in r.text, (domain, r.text[-1500:])
            assert "<script>alert" not in r.text
        assert add(http, "mine.test").status_code == 303
        r = add(http, "mine.test")
        assert r.status_code == 400 and "already added" in r.text
        assert http.post("/domains", data={"domain": "forged.test"}).status_code == 403
    assert [d.name for d in api.node.app.domains.list("alice")] == ["mine.test"]


def test_verify_shows_each_record_missing_different_or_ok_and_then_verifies(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    with browser(api) as http:
        sign_in(http)
        add(http, "sender.test")
        dns = api_dns(api)
        assert verify(http, "nope.test").status_code == 404
        r = verify(http, "sender.test")
        assert r.status_code == 200 and statuses(r) == ["missing"] * 4
        assert "Not every record is in place" in r.text

        fake_dns.txt("mr1._domainkey.sender.test", "v=DKIM1; k=rsa; p=AAAAnotthekey")
        fake_dns.txt("sender.test", f"v=spf1 include:elsewhere.test {HOSTILE} -all")
        fake_dns.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
        fake_dns.mx("sender.test", (10, "mx.elsewhere.test"))
        r = verify(http, "sender.test")
        assert statuses(r) == ["different", "different", "ok", "different"]
        assert "p=AAAAnotthekey" in r.text and "mx.elsewhere.test" in r.text  # what DNS holds, shown
        assert "does not authorize a:mx.mailrelay.test" in r.text
        assert "&lt;script&gt;" in r.text and "<script>alert" not in r.text  # as text
        assert api.node.app.domains.require("sender.test").verified_at is None

        fake_dns.clear()
        publish(fake_dns, dns)
        r = verify(http, "sender.test")
        assert statuses(r) == ["ok"] * 4 and "Every record is in place" in r.text
        assert api.node.app.domains.require("sender.test").verified_at is not None
        assert "Verified" in http.get("/domains").text
        fake_dns.clear()  # a failed check later does not take the verification back
        assert statuses(verify(http, "sender.test")) == ["missing"] * 4
    assert api.node.app.domains.require("sender.test").verified_at is not None


def test_a_silent_dns_server_bounds_the_check_and_never_holds_up_other_pages(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    with browser(api) as http:
        sign_in(http)
        add(http, "slow.test")
        publish(fake_dns, api_dns(api))
        fake_dns.timeout("_dmarc.slow.test")
        token = form_token(http.get("/domains/slow.test"))
        answers: list[httpx.Response] = []
        start = time.monotonic()
        checking = threading.Thread(target=lambda: answers.append(
            http.post("/domains/slow.test/verify", data={"csrf": token})))
        checking.start()
        time.sleep(0.3)
        with browser(api) as other:  # meanwhile, another page is served at once
            before = time.monotonic()
            assert other.get("/login").status_code == 200
            assert time.monotonic() - before < 0.5
        checking.join()
        spent = time.monotonic() - start
    assert spent < 4.0, spent  # [dns] timeout = 1: records are asked together, each bounded
    [r] = answers
    assert statuses(r) == ["ok", "ok", "error", "ok"] and "lookup failed" in r.text
    assert api.node.app.domains.require("slow.test").verified_at is None



def rotate(http: httpx.Client, domain: str, step: str = "", **fields: str) -> httpx.Response:
    token = form_token(http.get(f"/domains/{domain}"))
    return http.post(f"/domains/{domain}/rotate{step}", data={"csrf": token, **fields})


def test_rotation_finishes_only_once_dns_has_the_next_key_then_mail_is_signed_with_it(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    app = api.node.app
    alice = app.accounts.get("alice")
    assert alice is not None
    with browser(api) as http:
        sign_in(http)
        add(http, "sender.test")
        app.domains.mark_verified("sender.test")
        page = http.get("/domains/sender.test").text
        assert "Start rotation" in page and "not available yet" not in page and "Finish rotation" not in page

        r = rotate(http, "sender.test", selector="next1")
        assert r.status_code == 303 and r.headers["location"] == "/domains/sender.test?notice=rotation-started"
        page = http.get(r.headers["location"]).text
        assert "publish now (next key)" in page and ">next1._domainkey.sender.test</code>" in page
        assert "Finish rotation" in page and "Cancel rotation" in page and "Start rotation" not in page
        [next_key] = app.domains.require("sender.test").next_dkim
        assert html.escape(next_key.record) in page

        r = rotate(http, "sender.test", "/finish")
        assert r.status_code == 200 and "not in DNS yet" in r.text
        assert re.findall(r'class="rotation-check" data-status="(\w+)"', r.text) == ["missing"]
        fake_dns.txt("next1._domainkey.sender.test", "v=DKIM1; k=rsa; p=AAAAold")
        r = rotate(http, "sender.test", "/finish")
        assert re.findall(r'class="rotation-check" data-status="(\w+)"', r.text) == ["different"]
        assert "p=AAAAold" in r.text  # what DNS holds, shown
        assert app.domains.require("sender.test").selector == "mr1"

        fake_dns.clear()
        fake_dns.txt("next1._domainkey.sender.test", next_key.record)
        r = rotate(http, "sender.test", "/finish")
        assert r.status_code == 303 and r.headers["location"].endswith("notice=rotation-finished")
        page = http.get(r.headers["location"]).text
        assert "Selector <code>mr1</code>" in page and "you may remove its TXT record after a few days" in page
    assert app.domains.require("sender.test").selector == "next1"
    msg = b"From: alice@sender.test\r\nTo: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n"
    header = app.signer(alice.id, msg)
    assert header.startswith(b"DKIM-Signature: ") and b"s=next1;" in header and b"d=sender.test;" in header
    assert dkim.verify(header + msg, dnsfunc=dns_lookup(fake_dns)), "verifies against the published next key"


def test_rotation_cancel_another_accounts_domain_and_csrf(api_factory: Callable[..., APINode],
                                                         fake_dns: FakeDNS) -> None:
    api = api_factory(dns_toml(fake_dns))
    api.node.app.domains.add("bob.test", "bob")
    with browser(api) as http:
        sign_in(http)
        add(http, "mine.test")
        r = rotate(http, "mine.test", selector="mr1")
        assert r.status_code == 400 and "selector mr1 is in use" in r.text
        r = rotate(http, "mine.test", selector=HOSTILE)
        assert r.status_code == 400 and "<script>alert" not in r.text
        assert rotate(http, "mine.test", "/finish").status_code == 400  # nothing to finish
        assert rotate(http, "mine.test").status_code == 303  # default selector
        assert api.node.app.domains.require("mine.test").next_selector == time.strftime("mr%Y%m", time.gmtime())
        r = rotate(http, "mine.test", "/cancel")
        assert r.status_code == 303 and r.headers["location"].endswith("notice=rotation-cancelled")
        assert "Start rotation" in http.get("/domains/mine.test").text

        token = form_token(http.get("/domains"))
        for step in ("", "/finish", "/cancel"):
            assert http.post(f"/domains/bob.test/rotate{step}", data={"csrf": token}).status_code == 404
            assert http.post(f"/domains/mine.test/rotate{step}", data={"csrf": "forged"}).status_code == 403
    assert api.node.app.domains.require("bob.test").next_selector is None
    assert api.node.app.domains.require("mine.test").next_selector is None
    assert fake_dns.queries == []
