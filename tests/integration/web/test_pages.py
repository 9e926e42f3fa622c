"""Sign-in, sessions, CSRF, headers and the activity page, over real HTTP (httpx)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from tests.integration.delivery.conftest import RemoteMX, delivery_toml
from tests.integration.http.conftest import APINode
from tests.integration.smtp.conftest import PASSWORD
from tests.integration.web.support import HOSTILE, browser, form_token, send, sign_in
from tests.support.dnsserver import FakeDNS


def test_pages_need_a_session_and_sign_in_sets_a_strict_http_only_cookie(api: APINode) -> None:
    with browser(api) as http:
        assert http.get("/activity").headers["location"] == "/login"
        assert http.get("/").headers["location"] == "/login"
        r = sign_in(http)
        assert r.status_code == 303 and r.headers["location"] == "/activity"
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("mr_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain HTTP here; [http] tls = true adds it
        page = http.get("/activity")
        assert page.status_code == 200 and "alice" in page.text and "no-store" in page.headers["cache-control"]


def test_a_wrong_password_or_a_missing_form_token_signs_nobody_in(api: APINode) -> None:
    with browser(api) as http:
        wrong = sign_in(http, password="not-the-password")
        assert wrong.status_code == 401 and "wrong" in wrong.text and "mr_session" not in wrong.headers.get(
            "set-cookie", "")
        http.get("/login")
        forged = http.post("/login", data={"csrf": "guessed", "name": "alice", "password": PASSWORD})
        assert forged.status_code == 403
        assert http.get("/activity").status_code == 303
        assert sign_in(http, name="apikey", password=api.key()).status_code == 401  # keys are not passwords


def test_activity_shows_the_accounts_own_mail_as_text_never_markup(api: APINode) -> None:
    send(api, "alice", f"hello {HOSTILE}")
    send(api, "bob", "bob's secret subject")
    with browser(api) as http:
        sign_in(http)
        page = http.get("/activity").text
    assert "rcpt-alice@dest.test" in page and "hello &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    assert "bob" not in page.replace("alice", "")


def test_every_response_carries_the_security_headers(api: APINode) -> None:
    with browser(api) as http:
        for r in (http.get("/login"), http.get("/v3/scopes"), http.get("/static/dashboard.css")):
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert "script-src 'self';" in r.headers["content-security-policy"]  # no inline script, no other host
            assert "unsafe" not in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-content-type-options"] == "nosniff"


def test_sign_out_needs_the_sessions_token_and_ends_the_session(api: APINode) -> None:
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/activity"))
        assert http.post("/logout", data={"csrf": "wrong"}).status_code == 403
        assert http.get("/activity").status_code == 200  # still signed in
        stolen = http.cookies.get("mr_session")
        out = http.post("/logout", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"] == "/login"
    with browser(api) as other:  # the old cookie is worth nothing now
        other.cookies.set("mr_session", stolen or "")
        assert other.get("/activity").status_code == 303


def test_failed_sign_ins_count_with_smtp_and_api_failures(api_factory: Callable[..., APINode]) -> None:
    api = api_factory("[auth]\nslowdown_after = 3\nlockout_after = 3\nlockout_seconds = 60\n")
    key = api.key()
    with browser(api) as http:
        for _ in range(3):
            assert sign_in(http, password="nope").status_code == 401
        assert sign_in(http).status_code == 429  # the right password, from a locked-out address
    with api.client(key) as client:
        assert client.get("/v3/scopes").status_code == 429


def queue_ids(page: str) -> list[str]:
    return re.findall(r'href="/messages/([0-9A-Z]{16})"', page)


def test_a_message_page_shows_envelope_timeline_and_headers_and_only_to_its_account(api: APINode) -> None:
    send(api, "alice", f"hi {HOSTILE}")
    send(api, "bob", "bob's")
    with browser(api) as http:
        sign_in(http, "bob")
        [bobs] = queue_ids(http.get("/activity").text)
    with browser(api) as http:
        sign_in(http)
        [mine] = queue_ids(http.get("/activity").text)
        page = http.get(f"/messages/{mine}")
        assert page.status_code == 200
        text = page.text
        assert "&lt;alice@sender.test&gt;" in text and "rcpt-alice@dest.test" in text
        assert "due now; 0 attempts" in text  # delivery is off on this node: why it waits
        assert "processed" in text  # the timeline
        assert "Subject: hi &lt;script&gt;" in text and "<script>" not in text  # headers, as text
        for other in (bobs, "0000000000000000", "not-a-queue-id"):  # bob's, unknown, malformed: alike
            r = http.get(f"/messages/{other}")
            assert r.status_code == 404 and "bob" not in r.text.replace("bob's", "")


def test_the_timeline_shows_each_attempt_with_host_and_reply(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = api_factory(delivery_toml(fake_dns.address, mx_port))
    send(api, "alice", "delivered one")
    with browser(api) as http:
        sign_in(http)
        [mine] = queue_ids(http.get("/activity").text)
        deadline = time.monotonic() + 20
        while "delivered" not in (page := http.get(f"/messages/{mine}").text):
            assert time.monotonic() < deadline, page
            time.sleep(0.2)
    assert "mx.dest.test" in page and "127.0.0.2" in page and "250" in page


def test_activity_filters_by_recipient_sender_subject_and_status(api: APINode) -> None:
    send(api, "alice", "first")
    send(api, "alice", "second")
    with browser(api) as http:
        sign_in(http)
        assert len(queue_ids(http.get("/activity").text)) == 2
        assert len(queue_ids(http.get("/activity", params={"subject": "second"}).text)) == 1
        assert len(queue_ids(http.get("/activity", params={"to": "RCPT-alice@dest.test"}).text)) == 2
        assert queue_ids(http.get("/activity", params={"from": "nobody@x.test"}).text) == []
        assert len(queue_ids(http.get("/activity", params={"status": "processing"}).text)) == 2
        assert queue_ids(http.get("/activity", params={"status": "delivered"}).text) == []
        page = http.get("/activity", params={"status": "no-such", "subject": "first"}).text
        assert len(queue_ids(page)) == 1 and 'data-rows="/activity/rows?subject=first"' in page
        assert len(queue_ids(http.get("/activity/rows", params={"subject": "first"}).text)) == 1


def test_a_form_with_too_many_fields_is_refused_as_a_form_without_its_token(api: APINode) -> None:
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/activity"))
        fields = {"csrf": token, **{f"f{i}": "x" for i in range(100)}}
        r = http.post("/logout", data=fields)
        assert r.status_code == 403
        assert http.get("/activity").status_code == 200  # still signed in
