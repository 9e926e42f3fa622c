"""The webhooks pages over real HTTP: the event webhook's settings saved through the API's
checks, the last POSTs (a real receiver on loopback, events of mail really sent), the test
event button, SendGrid's signing key, and the Inbound Parse settings of the account's domains."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from sendgrid.helpers.eventwebhook import EventWebhook

from mailrelay.accounts.domains import DomainService
from mailrelay.events import postlog
from mailrelay.events.hooks import WebhookService
from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, browser, form_token, send, sign_in
from tests.support.dnsserver import FakeDNS
from tests.support.httpsink import Receiver, http_receiver

HOOKS = "[webhooks]\nretry_first = 0.2\nretry_max = 0.4\ntimeout = 2\n"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/events?token=t") as rcv:
        yield rcv


def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def posts_table(page: str) -> list[list[str]]:
    """The last POSTs' rows: their cells as text."""
    found = re.search(r'<table id="posts">(.*?)</table>', page, re.S)
    if found is None:
        return []
    rows = re.findall(r"<tr class=\"post-[a-z]+\">(.*?)</tr>", found.group(1), re.S)
    return [[c.strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)] for r in rows]


def test_events_of_mail_sent_are_listed_with_status_and_response_time(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX], receiver: Receiver) -> None:
    remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    live = api_factory(delivery_toml(fake_dns.address, mx_port, HOOKS))
    receiver.fail_first = 1  # the first POST is answered 500, its retry 200
    with browser(live) as http:
        sign_in(http)
        page = http.get("/webhooks")
        assert page.status_code == 200 and "No POSTs yet" in page.text
        saved = http.post("/webhooks", data={"csrf": form_token(page), "url": receiver.url, "enabled": "on",
                                             "events": ["processed", "delivered"]})
        assert saved.status_code == 303 and saved.headers["location"] == "/webhooks?notice=webhook_saved"
        send(live, "alice", "hooked")
        wait_for(lambda: {e["event"] for p in receiver.accepted() for e in json.loads(p.body)}
                 >= {"processed", "delivered"})
        wait_for(lambda: sum(int(r[2]) for r in posts_table(http.get("/webhooks").text) if r[3] == "200") >= 2)
        page = http.get("/webhooks").text
    rows = posts_table(page)
    assert len(rows) == len(receiver.posts), (rows, receiver.posts)
    assert [r[3] for r in rows][-1] == "500" and "answered HTTP 500" in rows[-1][5]  # oldest last
    assert all(r[1] == receiver.url.split("?")[0] for r in rows), "the URL without its query (a token)"
    assert all(re.fullmatch(r"\d+ ms", r[4]) for r in rows)
    assert sum(int(r[2]) for r in rows if r[3] == "200") == 2  # processed and delivered, posted once each
    # what was saved is shown again: the URL, on, the two events ticked and no others
    assert f'value="{receiver.url}"' in page
    assert re.search(r'id="w-enabled" name="enabled" type="checkbox" checked', page)
    ticked = re.findall(r'name="events" value="([a-z_]+)" type="checkbox" checked', page)
    assert sorted(ticked) == ["delivered", "processed"]


def test_the_test_event_button_posts_signed_and_records_the_outcome_for_this_account_only(
        api: APINode, receiver: Receiver) -> None:
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/webhooks"))
        assert http.post("/webhooks/test", data={"url": receiver.url}).status_code == 403
        assert http.post("/webhooks/signing", data={"csrf": "forged", "signed": "on"}).status_code == 403
        assert receiver.posts == []
        on = http.post("/webhooks/signing", data={"csrf": token, "signed": "on"})
        assert on.headers["location"] == "/webhooks?notice=signing_on"
        page = http.get("/webhooks").text
        public_key = re.search(r'<textarea id="public-key"[^>]*>([^<]+)</textarea>', page)
        assert public_key is not None
        sent = http.post("/webhooks/test", data={"csrf": token, "url": receiver.url})
        assert sent.headers["location"] == "/webhooks?notice=test_ok"
        [post] = receiver.accepted()
        assert EventWebhook(public_key.group(1)).verify_signature(
            post.body.decode(), post.headers["x-twilio-email-event-webhook-signature"],
            post.headers["x-twilio-email-event-webhook-timestamp"]) is True
        receiver.fail_first = 99
        failed = http.post("/webhooks/test", data={"csrf": token, "url": receiver.url})
        assert failed.headers["location"] == "/webhooks?notice=test_failed"
        page = http.get("/webhooks?notice=test_failed").text
        assert "The test event failed" in page
        [bad, good] = posts_table(page)
        assert bad[2] == good[2] == "test" and (bad[3], good[3]) == ("500", "200")
        assert "answered HTTP 500" in bad[5]
        refused = http.post("/webhooks/test", data={"csrf": token, "url": "javascript:alert(1)"})
        assert refused.status_code == 400 and "must start with http://" in refused.text
    with browser(api) as http:  # bob sees none of it
        sign_in(http, "bob")
        page = http.get("/webhooks").text
        assert posts_table(page) == [] and "127.0.0.1" not in page and public_key.group(1) not in page


def test_settings_are_checked_as_the_api_checks_them_and_shown_as_text(
        api_factory: Callable[..., APINode], receiver: Receiver) -> None:
    api = api_factory("[webhooks]\nallow_private_targets = false\n")
    hooks = WebhookService(api.node.app.engine)
    alice = api.node.app.accounts.get("alice")
    assert alice is not None
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/webhooks"))
        for url in ("http://127.0.0.1:9/events", "http://10.0.0.1/x", "http://localhost/x"):
            r = http.post("/webhooks", data={"csrf": token, "url": url, "enabled": "on", "events": "delivered"})
            assert r.status_code == 400 and "allow_private_targets" in r.text, url
        assert hooks.settings(alice.id).url is None
        test = http.post("/webhooks/test", data={"csrf": token, "url": receiver.url})
        assert test.status_code == 400 and "internal" in test.text and receiver.posts == []
        hostile = "https://hooks.example.com/?q=" + HOSTILE.replace(" ", "")
        saved = http.post("/webhooks", data={"csrf": token, "url": hostile, "events": ["bounce"]})
        assert saved.status_code == 303
        page = http.get("/webhooks").text
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        found = hooks.settings(alice.id)
        assert found.url == hostile and not found.enabled and found.events == {"bounce"}
        assert found.secret and found.secret in page  # made with the URL, shown to its account
        old = found.secret
        assert http.post("/webhooks/secret", data={"csrf": token}).status_code == 303
        assert hooks.settings(alice.id).secret not in (None, old)


def test_parse_settings_list_change_and_stop_only_the_accounts_own_domains(api: APINode) -> None:
    domains = DomainService(api.node.app.engine)
    domains.add("in.alice.test", "alice", inbound=True, webhook="https://hooks.alice.test/parse")
    domains.add("send.alice.test", "alice")
    domains.add("in.bob.test", "bob", inbound=True, webhook="https://hooks.bob.test/secret-parse")
    with browser(api) as http:
        sign_in(http)
        page = http.get("/webhooks/parse")
        token = form_token(page)
        assert "in.alice.test" in page.text and "https://hooks.alice.test/parse" in page.text
        assert "bob" not in page.text
        assert '<option>send.alice.test</option>' in page.text  # may start receiving
        changed = http.post("/webhooks/parse/in.alice.test",
                            data={"csrf": token, "url": "https://hooks.alice.test/new", "raw": "on"})
        assert changed.headers["location"] == "/webhooks/parse?notice=parse_saved"
        found = domains.require("in.alice.test")
        assert found.inbound_webhook == "https://hooks.alice.test/new" and found.inbound_raw
        bad = http.post("/webhooks/parse/in.alice.test", data={"csrf": token, "url": "ftp://x.test/"})
        assert bad.status_code == 400 and "http://" in bad.text
        for other in ("in.bob.test", "send.alice.test", "nowhere.test"):  # another's, not receiving, unknown
            assert http.post(f"/webhooks/parse/{other}", data={"csrf": token, "url": "https://x.test/"}
                             ).status_code == 404
            assert http.post(f"/webhooks/parse/{other}/delete", data={"csrf": token}).status_code == 404
        assert domains.require("in.bob.test").inbound_webhook == "https://hooks.bob.test/secret-parse"
        taken = http.post("/webhooks/parse", data={"csrf": token, "hostname": "in.bob.test", "url": "https://x.test/"})
        assert taken.status_code == 400 and "not a domain of this account" in taken.text.lower()
        assert http.post("/webhooks/parse", data={"hostname": "send.alice.test"}).status_code == 403
        added = http.post("/webhooks/parse", data={"csrf": token, "hostname": "send.alice.test",
                                                   "url": "https://hooks.alice.test/2"})
        assert added.status_code == 303 and domains.require("send.alice.test").inbound
        gone = http.post("/webhooks/parse/in.alice.test/delete", data={"csrf": token})
        assert gone.headers["location"] == "/webhooks/parse?notice=parse_deleted"
        assert not domains.require("in.alice.test").inbound


def test_only_the_newest_posts_are_kept_per_account(api: APINode) -> None:
    engine = api.node.app.engine
    alice, bob = api.node.app.accounts.get("alice"), api.node.app.accounts.get("bob")
    assert alice is not None and bob is not None
    postlog.record_one(engine, bob.id, postlog.PostRecord(at=1.0, url="https://bob.test/x?token=t", events=1,
                                                          status=204, seconds=0.01))
    for i in range(postlog.KEEP + 5):
        postlog.record_one(engine, alice.id, postlog.PostRecord(at=1000.0 + i, url="https://a.test/h?k=secret",
                                                                events=i, status=200, seconds=0.5))
    kept = postlog.last_posts(engine, alice.id)
    assert [p.events for p in kept] == list(range(postlog.KEEP + 4, 4, -1))
    assert {p.url for p in kept} == {"https://a.test/h"}  # stored without the query
    assert [p.url for p in postlog.last_posts(engine, bob.id)] == ["https://bob.test/x"]  # bob's untouched
    with browser(api) as http:
        sign_in(http)
        rows = posts_table(http.get("/webhooks").text)
    assert len(rows) == postlog.KEEP and rows[0][4] == "500 ms" and "bob.test" not in str(rows)
