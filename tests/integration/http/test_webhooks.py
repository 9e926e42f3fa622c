"""Webhook settings over the API: the event webhook (settings, SendGrid's signature, the test
POST) and Inbound Parse. Events are delivered for real (aiosmtpd MX on loopback, fake DNS) and
POSTed to a real HTTP receiver, whose headers are checked with SendGrid's own verifier."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from python_http_client.exceptions import ForbiddenError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook

from mailrelay.accounts.domains import DomainService
from mailrelay.events import signing
from mailrelay.events.hooks import WebhookService
from mailrelay.store.schema import accounts, events
from tests.integration.delivery.conftest import RemoteMX, delivery_toml, mx_port, remote_mx
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.http.conftest import APINode
from tests.support.dnsserver import FakeDNS
from tests.support.httpsink import Receiver, http_receiver

__all__ = ["mx_port", "remote_mx"]  # fixtures

HOOKS = "[webhooks]\nretry_first = 0.2\nretry_max = 0.4\ntimeout = 2\n"
ALL_OFF = dict.fromkeys(("group_resubscribe", "delivered", "group_unsubscribe", "spam_report", "bounce",
                         "deferred", "unsubscribe", "processed", "open", "click", "dropped"), False)
MSG = b"From: alice@sender.test\r\nTo: x@dest.test\r\nSubject: hi\r\nMessage-ID: <w1@sender.test>\r\n\r\nHello.\r\n"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/events?token=t") as rcv:
        yield rcv


@pytest.fixture
def live(api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
         remote_mx: Callable[..., RemoteMX]) -> APINode:
    """An API node that delivers to a loopback MX for dest.test (and posts events)."""
    remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    return api_factory(delivery_toml(fake_dns.address, mx_port, HOOKS))


def sendgrid(api: APINode, key: str | None = None) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=key or api.key(), host=api.url)


def posted(rcv: Receiver) -> list[dict[str, Any]]:
    return [e for p in rcv.accepted() for e in json.loads(p.body)]


def wait_posts(rcv: Receiver, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(posted(rcv)):
            return
        time.sleep(0.05)
    raise AssertionError(f"receiver got {[e['event'] for e in posted(rcv)]}")


def test_settings_round_trip_through_sendgrids_client_and_stay_per_account(api: APINode, receiver: Receiver) -> None:
    sg = sendgrid(api)
    before = json.loads(sg.client.user.webhooks.event.settings.get().body)
    assert before["enabled"] is False and before["url"] == ""
    assert all(before[name] for name in ALL_OFF), "every event is on by default"
    wanted = {**ALL_OFF, "enabled": True, "url": receiver.url, "delivered": True, "bounce": True,
              "oauth_client_id": "", "oauth_token_url": ""}
    answer = sg.client.user.webhooks.event.settings.patch(request_body=wanted)
    assert answer.status_code == 200
    assert json.loads(answer.body) == wanted
    assert json.loads(sg.client.user.webhooks.event.settings.get().body) == wanted
    # a partial PATCH changes only what it names
    sg.client.user.webhooks.event.settings.patch(request_body={"processed": True})
    got = json.loads(sg.client.user.webhooks.event.settings.get().body)
    assert got == {**wanted, "processed": True}
    with api.node.app.engine.connect() as conn:
        stored = conn.execute(sa.select(accounts.c.webhook_url, accounts.c.webhook_events, accounts.c.webhook_secret)
                              .where(accounts.c.name == "alice")).one()
    assert stored.webhook_url == receiver.url and stored.webhook_secret, "our HMAC secret is made with the URL"
    assert json.loads(stored.webhook_events) == ["processed", "delivered", "bounce"]
    # bob sees his own (untouched) settings, never alice's
    bob = json.loads(sendgrid(api, api.key("bob")).client.user.webhooks.event.settings.get().body)
    assert bob == before
    # the URL as `mailrelay account webhook` checks it
    with api.client(api.key()) as http:
        bad = http.patch("/v3/user/webhooks/event/settings", json={"url": "ftp://example.com/x"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "url"
        oauth = http.patch("/v3/user/webhooks/event/settings", json={"oauth_client_id": "abc"})
        assert oauth.status_code == 400 and oauth.json()["errors"][0]["field"] == "oauth_client_id"
        not_bool = http.patch("/v3/user/webhooks/event/settings", json={"delivered": "yes"})
        assert not_bool.status_code == 400
        cleared = http.patch("/v3/user/webhooks/event/settings", json={"url": ""}).json()
        assert cleared["url"] == "" and cleared["enabled"] is False


def test_a_key_without_the_scope_is_refused(api: APINode) -> None:
    key = api.key(scopes=["user.webhooks.event.settings.read"])
    sg = sendgrid(api, key)
    assert sg.client.user.webhooks.event.settings.get().status_code == 200
    with pytest.raises(ForbiddenError):
        sg.client.user.webhooks.event.settings.patch(request_body={"enabled": False})
    with pytest.raises(ForbiddenError):
        sg.client.user.webhooks.event.settings.signed.patch(request_body={"enabled": True})
    with pytest.raises(ForbiddenError):
        sg.client.user.webhooks.parse.settings.get()


def test_signed_events_verify_with_sendgrids_event_webhook_helper(live: APINode, receiver: Receiver) -> None:
    sg = sendgrid(live)
    assert json.loads(sg.client.user.webhooks.event.settings.signed.get().body) == {"public_key": ""}
    sg.client.user.webhooks.event.settings.patch(request_body={"enabled": True, "url": receiver.url})
    public_key = json.loads(sg.client.user.webhooks.event.settings.signed.patch(
        request_body={"enabled": True}).body)["public_key"]
    assert public_key and json.loads(sg.client.user.webhooks.event.settings.signed.get().body) == {
        "public_key": public_key}
    again = json.loads(sg.client.user.webhooks.event.settings.signed.patch(request_body={"enabled": True}).body)
    assert again == {"public_key": public_key}, "turning it on again keeps the key"

    qid = submit(live.node, ["ann@dest.test"], MSG)
    wait_posts(receiver, lambda evs: [e["event"] for e in evs if e["mailrelay_message_id"] == qid]
               == ["processed", "delivered"])
    verifier = EventWebhook(public_key)
    secret = WebhookService(live.node.app.engine).get("alice").secret
    assert secret
    for post in receiver.accepted():
        sig = post.headers["x-twilio-email-event-webhook-signature"]
        ts = post.headers["x-twilio-email-event-webhook-timestamp"]
        assert abs(int(ts) - time.time()) < 60
        assert verifier.verify_signature(post.body.decode(), sig, ts) is True
        tampered = post.body.decode().replace("ann@dest.test", "eve@dest.test")
        assert verifier.verify_signature(tampered, sig, ts) is False
        assert verifier.verify_signature(post.body.decode(), sig, str(int(ts) + 1)) is False
        # ours is still there, beside SendGrid's
        assert signing.verify(secret, post.headers["x-mailrelay-timestamp"], post.body,
                              post.headers["x-mailrelay-signature"], now=time.time())

    # off: no more SendGrid headers (ours stay); on again: a new key
    assert json.loads(sg.client.user.webhooks.event.settings.signed.patch(
        request_body={"enabled": False}).body) == {"public_key": ""}
    count = len(receiver.accepted())
    qid2 = submit(live.node, ["ben@dest.test"], MSG)
    wait_posts(receiver, lambda evs: "delivered" in [e["event"] for e in evs if e["mailrelay_message_id"] == qid2])
    for post in receiver.accepted()[count:]:
        assert "x-twilio-email-event-webhook-signature" not in post.headers
        assert "x-mailrelay-signature" in post.headers
    renewed = json.loads(sg.client.user.webhooks.event.settings.signed.patch(request_body={"enabled": True}).body)
    assert renewed["public_key"] not in ("", public_key)


def test_a_disabled_webhook_posts_nothing_and_queues_nothing(live: APINode, receiver: Receiver) -> None:
    sg = sendgrid(live)
    sg.client.user.webhooks.event.settings.patch(request_body={"enabled": False, "url": receiver.url})
    qid = submit(live.node, ["ann@dest.test"], MSG)
    wait_status(live.node, qid, {"ann@dest.test": "delivered"})
    with live.node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.webhook_due_at)
                            .where(events.c.message_id == qid)).all()
    assert {r.type for r in rows} >= {"processed", "delivered"}
    assert all(r.webhook_due_at is None for r in rows), "nothing put in the outbox"
    time.sleep(1.0)  # the dispatcher polls every 0.5 s
    assert receiver.posts == []
    # enabled again: later events are posted (earlier ones are not, as SendGrid's)
    sg.client.user.webhooks.event.settings.patch(request_body={"enabled": True})
    qid2 = submit(live.node, ["ben@dest.test"], MSG)
    wait_posts(receiver, lambda evs: "delivered" in [e["event"] for e in evs if e["mailrelay_message_id"] == qid2])
    assert qid not in {e["mailrelay_message_id"] for e in posted(receiver)}


def test_an_event_switched_off_is_not_posted(live: APINode, receiver: Receiver) -> None:
    sg = sendgrid(live)
    sg.client.user.webhooks.event.settings.patch(
        request_body={"enabled": True, "url": receiver.url, "processed": False})
    first = submit(live.node, ["ann@dest.test"], MSG)
    second = submit(live.node, ["ben@dest.test"], MSG)
    wait_posts(receiver, lambda evs: {e["mailrelay_message_id"] for e in evs if e["event"] == "delivered"}
               == {first, second})
    time.sleep(0.6)
    assert sorted(e["event"] for e in posted(receiver)) == ["delivered", "delivered"]


def test_the_test_post_arrives_signed_and_a_bad_url_is_refused(api: APINode, receiver: Receiver) -> None:
    sg = sendgrid(api)
    public_key = json.loads(sg.client.user.webhooks.event.settings.signed.patch(
        request_body={"enabled": True}).body)["public_key"]
    answer = sg.client.user.webhooks.event.test.post(request_body={"url": receiver.url})
    assert answer.status_code == 204
    [post] = receiver.accepted()
    [event] = json.loads(post.body)
    assert event["event"] == "processed" and event["email"] == "example@test.com"
    assert EventWebhook(public_key).verify_signature(
        post.body.decode(), post.headers["x-twilio-email-event-webhook-signature"],
        post.headers["x-twilio-email-event-webhook-timestamp"]) is True
    with api.client(api.key()) as http:
        bad = http.post("/v3/user/webhooks/event/test", json={"url": "javascript:alert(1)"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "url"
        receiver.fail_first = 99  # the receiver now answers 500
        failed = http.post("/v3/user/webhooks/event/test", json={"url": receiver.url})
        assert failed.status_code == 400 and "HTTP 500" in failed.json()["errors"][0]["message"]
        assert "token=t" not in failed.text, "the URL's query is not echoed"


def test_parse_settings_map_onto_the_accounts_inbound_domains(api: APINode, receiver: Receiver) -> None:
    domains = DomainService(api.node.app.engine)
    domains.add("in.alice.test", "alice", inbound=True, webhook="https://hooks.alice.test/parse")
    domains.add("send.alice.test", "alice")
    domains.add("in.bob.test", "bob", inbound=True, webhook="https://hooks.bob.test/parse")
    sg = sendgrid(api)
    listed = json.loads(sg.client.user.webhooks.parse.settings.get().body)
    assert listed == {"result": [{"url": "https://hooks.alice.test/parse", "hostname": "in.alice.test",
                                  "spam_check": False, "send_raw": False}]}
    changed = sg.client.user.webhooks.parse.settings._("in.alice.test").patch(
        request_body={"url": receiver.url, "send_raw": True})
    assert json.loads(changed.body) == {"url": receiver.url, "hostname": "in.alice.test", "spam_check": False,
                                        "send_raw": True}
    found = domains.require("in.alice.test")
    assert found.inbound_webhook == receiver.url and found.inbound_raw
    with api.client(api.key()) as http:
        # another account's hostname, or one that does not receive: 404, as a missing one
        for name in ("in.bob.test", "send.alice.test", "nowhere.test"):
            assert http.get(f"/v3/user/webhooks/parse/settings/{name}").status_code == 404
            assert http.patch(f"/v3/user/webhooks/parse/settings/{name}", json={"url": receiver.url}
                              ).status_code == 404
            assert http.delete(f"/v3/user/webhooks/parse/settings/{name}").status_code == 404
        assert domains.require("in.bob.test").inbound_webhook == "https://hooks.bob.test/parse"
        spam = http.patch("/v3/user/webhooks/parse/settings/in.alice.test", json={"spam_check": True})
        assert spam.status_code == 400 and spam.json()["errors"][0]["field"] == "spam_check"
        taken = http.post("/v3/user/webhooks/parse/settings", json={"hostname": "in.bob.test", "url": receiver.url})
        assert taken.status_code == 400 and taken.json()["errors"][0]["field"] == "hostname"
        created = http.post("/v3/user/webhooks/parse/settings",
                            json={"hostname": "send.alice.test", "url": "https://hooks.alice.test/2"})
        assert created.status_code == 201 and created.json()["hostname"] == "send.alice.test"
        assert http.delete("/v3/user/webhooks/parse/settings/in.alice.test").status_code == 204
        names = [r["hostname"] for r in http.get("/v3/user/webhooks/parse/settings").json()["result"]]
        assert names == ["send.alice.test"]
    assert not domains.require("in.alice.test").inbound


INTERNAL = ["http://127.0.0.1:9/events", "http://localhost:9/x", "http://[::1]/x", "http://10.0.0.1/x",
            "http://169.254.169.254/latest/meta-data/", "http://[::ffff:192.168.1.1]/x", "http://app.localhost/x"]


def test_internal_urls_are_refused_unless_the_operator_allows_them(
        api_factory: Callable[..., APINode], receiver: Receiver) -> None:
    api = api_factory("[webhooks]\nallow_private_targets = false\n")
    with api.client(api.key()) as http:
        for url in INTERNAL:
            r = http.patch("/v3/user/webhooks/event/settings", json={"url": url, "enabled": True})
            assert r.status_code == 400 and r.json()["errors"][0]["field"] == "url", (url, r.text)
            assert "allow_private_targets" in r.json()["errors"][0]["message"]
        test = http.post("/v3/user/webhooks/event/test", json={"url": receiver.url})
        assert test.status_code == 400 and "internal" in test.json()["errors"][0]["message"]
        DomainService(api.node.app.engine).add("in.alice.test", "alice", inbound=True)
        parse = http.patch("/v3/user/webhooks/parse/settings/in.alice.test", json={"url": "http://10.1.2.3/parse"})
        assert parse.status_code == 400 and parse.json()["errors"][0]["field"] == "url"
        ok = http.patch("/v3/user/webhooks/event/settings", json={"url": "https://hooks.example.com/x"})
        assert ok.status_code == 200
    assert receiver.posts == []


def test_no_event_is_posted_to_a_host_that_resolves_to_an_internal_address(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX], receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    live = api_factory(delivery_toml(fake_dns.address, mx_port, HOOKS + "allow_private_targets = false\n"))
    # set by the operator's CLI (allowed to name any host); the POST is still checked
    hooks = WebhookService(live.node.app.engine)
    alice = live.node.app.accounts.get("alice")
    assert alice is not None
    hooks.update(alice.id, url=receiver.url.replace("127.0.0.1", "localhost"), enabled=True)
    qid = submit(live.node, ["ann@dest.test"], MSG)
    wait_status(live.node, qid, {"ann@dest.test": "delivered"})
    deadline = time.monotonic() + 10
    while "internal address" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text[-2000:]
        time.sleep(0.1)
    assert receiver.posts == []
