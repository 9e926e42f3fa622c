"""The sandbox inbox pages over real HTTP: the list (own captures only, search, paging, live rows),
a message's sections, the HTML frame's own headers, downloads, release, clear, chaos, CSRF, 404s.
Real SMTP submission, real capture by the delivery workers, both databases."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from mailrelay.sandbox.chaos import parse
from mailrelay.sandbox.inbox import Inbox
from mailrelay.store.schema import events, messages
from mailrelay.web.sandbox import PAGE_ROWS
from tests.integration.delivery.conftest import delivery_toml
from tests.integration.delivery.test_delivery import submit, wait_status
from tests.integration.http.conftest import APINode
from tests.integration.smtp.conftest import PASSWORD
from tests.integration.web.support import HOSTILE, browser, form_token, sign_in
from tests.support.dnsserver import FakeDNS

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                       "AAAABJRU5ErkJggg==")


def sandbox_api(api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
                *accounts: str) -> APINode:
    """A node that captures: delivery on, the given accounts (alice by default) in sandbox mode."""
    api = api_factory(delivery_toml(fake_dns.address, mx_port))
    for name in accounts or ("alice",):
        api.node.app.accounts.set_sandbox(name, True)
    return api


def mime(subject: str, html: str | None = None, *, text: str = "plain words\n", inline_png: bool = False,
         attachment: tuple[str, bytes, str] | None = None, sender: str = "alice@sender.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "bob@dest.test"
    msg["Subject"] = subject
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        if inline_png:
            html_part = msg.get_payload()[1]
            html_part.add_related(PNG, "image", "png", cid="<logo@sender.test>", filename="logo.png")
    if attachment is not None:
        name, data, ctype = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def capture(api: APINode, msg: bytes, user: str = "alice", sender: str = "alice@sender.test") -> str:
    """Submit `msg` over SMTP as `user` and wait until the sandbox has captured it."""
    qid = submit(api.node, ["bob@dest.test"], msg, sender, user=user)
    wait_status(api.node, qid, {"bob@dest.test": "captured"})
    return qid


def inbox_ids(page: str) -> list[str]:
    return re.findall(r'href="/sandbox/([0-9A-Z]{16})"', page)


def test_the_list_shows_own_captures_newest_first_searches_pages_and_hides_others(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port, "alice", "bob")
    first = capture(api, mime(f"first {HOSTILE}", attachment=("a.txt", b"x", "text/plain")))
    second = capture(api, mime("second one"))
    bobs = capture(api, mime("bob's secret", sender="bob@sender.test"), user="bob", sender="bob@sender.test")
    with browser(api) as http:
        sign_in(http)
        r = http.get("/sandbox")
        assert r.status_code == 200
        page = r.text
        assert inbox_ids(page) == [second, first] and bobs not in page
        assert "first &lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert "This is a sandbox account" in page and 'data-live="/sandbox/stream"' in page
        rows = re.findall(r"<tr><td>.*?</tr>", page, re.S)
        assert "bob@dest.test" in rows[1] and "alice@sender.test" in rows[1] and re.search(r"<td>1</td></tr>", rows[1])
        assert re.search(r"<td>0</td></tr>", rows[0])  # attachment counts: none, one
        assert inbox_ids(http.get("/sandbox", params={"q": "SECOND"}).text) == [second]
        assert inbox_ids(http.get("/sandbox", params={"q": "bob's"}).text) == []  # not another's mail
        assert inbox_ids(http.get("/sandbox/rows", params={"q": "first"}).text) == [first]
        assert inbox_ids(http.get("/sandbox", params={"page": "2"}).text) == []
        assert 'rel="next"' not in page
        for other in (bobs, "0000000000000000", "not-an-id"):  # bob's, unknown, malformed: alike
            for path in (f"/sandbox/{other}", f"/sandbox/{other}/raw", f"/sandbox/{other}/parts/1"):
                got = http.get(path)
                assert got.status_code == 404 and "secret" not in got.text, path
            assert http.get(f"/sandbox/{other}/html").status_code == 404
        token = form_token(r)
        assert http.post(f"/sandbox/{bobs}/release", data={"csrf": token}).status_code == 404
    wait_status(api.node, bobs, {"bob@dest.test": "captured"})  # still captured, not released
    with browser(api) as http:  # the bob's own view has it
        sign_in(http, "bob")
        assert inbox_ids(http.get("/sandbox").text) == [bobs]
    with browser(api) as anonymous:
        assert anonymous.get("/sandbox").headers["location"] == "/login"
        assert anonymous.get(f"/sandbox/{first}/html").status_code == 401
        assert anonymous.get("/sandbox/rows").status_code == 401


def test_a_message_shows_html_frame_text_headers_source_attachments_links_and_summary(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port)
    html = ('<p>Hi</p><a href="https://app.test/ok">Good link</a> <a href=" java\tscript:alert(1)">Bad</a> '
            '<a href="http://plain.test/">Clear text</a> <img src="http://127.0.0.1:9/pixel.png" alt="pixel">'
            '<img src="cid:logo@sender.test" alt="logo"><script>alert(9)</script><form action="https://x.test/">'
            '</form><meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/"></iframe>')
    qid = capture(api, mime(f"html {HOSTILE}", html, inline_png=True,
                            attachment=('re"port<1>.html', b"<script>alert(5)</script>", "text/html")))
    with browser(api) as http:
        sign_in(http)
        r = http.get(f"/sandbox/{qid}")
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "frame-src 'self'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        page = r.text
        assert '<iframe class="sandbox-html" sandbox="" referrerpolicy="no-referrer"' in page
        assert f'src="/sandbox/{qid}/html"' in page and "Show remote images" in page
        assert "<script>alert" not in page and "Subject</th><td>html &lt;script&gt;" in page
        assert "plain words" in page and "Content-Type" in page  # text, headers
        assert "alert(9)&lt;/script&gt;" in page  # the source, as text
        # the link check: each target with its text and what is wrong
        assert re.search(r"https://app.test/ok</code></td><td>Good link</td>\s*<td>ok</td>", page)
        assert re.search(r"script:alert\(1\)</code></td><td>Bad</td>\s*<td>dangerous: a javascript: link", page)
        assert re.search(r"http://plain.test/</code></td><td>Clear text</td>\s*<td>not https", page)
        assert re.search(r"http://127.0.0.1:9/pixel.png</code></td><td>pixel</td>\s*<td>remote, not https", page)
        # the summary and the HTML check
        for flagged in ("1 &lt;script&gt; element", "1 form(s)", "1 remote image(s)", "1 &lt;meta http-equiv&gt;",
                        "1 javascript:, vbscript: or data: link(s)", "1 http: link(s)"):
            assert flagged in page, flagged
        assert re.search(r"HTML: \d+ characters, 3 links,\s+2 images \(1 remote\)", page)
        # attachments: the inline image and the file, each a download
        parts = dict(re.findall(rf'<a href="/sandbox/{qid}/parts/(\d+)" download>([^<]+)</a>', page))
        assert sorted(parts.values()) == ["logo.png", "re&#34;port&lt;1&gt;.html"]

        frame = http.get(f"/sandbox/{qid}/html")
        assert frame.status_code == 200 and frame.headers["content-type"] == "text/html; charset=utf-8"
        fcsp = frame.headers["content-security-policy"]
        assert "default-src 'none'" in fcsp and "img-src data: cid:;" in fcsp and "script" not in fcsp
        assert "frame-ancestors 'self'" in fcsp and fcsp.endswith("sandbox") and "http" not in fcsp
        assert frame.headers["x-frame-options"] == "SAMEORIGIN" and frame.headers["referrer-policy"] == "no-referrer"
        assert "data:image/png;base64," in frame.text and "cid:logo" not in frame.text  # inline image inlined
        assert "http-equiv" not in frame.text.replace("data-blocked-http-equiv", "")
        wide = http.get(f"/sandbox/{qid}/html", params={"images": "1"}).headers["content-security-policy"]
        assert "img-src data: cid: https: http:;" in wide and "script" not in wide and "default-src 'none'" in wide

        for index, name in parts.items():
            got = http.get(f"/sandbox/{qid}/parts/{index}")
            assert got.status_code == 200 and got.headers["content-type"] == "application/octet-stream"
            assert got.headers["content-disposition"].startswith("attachment; filename=")
            assert got.headers["x-content-type-options"] == "nosniff"
            if name == "logo.png":
                assert got.content == PNG
            else:
                assert got.content == b"<script>alert(5)</script>"
                assert got.headers["content-disposition"] == (
                    "attachment; filename=\"re_port_1_.html\"; filename*=UTF-8''re%22port%3C1%3E.html")
        assert http.get(f"/sandbox/{qid}/parts/999").status_code == 404
        raw = http.get(f"/sandbox/{qid}/raw")
        assert raw.headers["content-type"] == "application/octet-stream" and b"alert(9)" in raw.content
        assert raw.headers["content-disposition"].startswith(f'attachment; filename="{qid}.eml"')


def test_release_queues_the_message_and_posts_need_the_token(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port)
    kept = capture(api, mime("kept"))
    qid = capture(api, mime("to release"))
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get(f"/sandbox/{qid}"))
        for path in (f"/sandbox/{qid}/release", "/sandbox/clear", "/sandbox/chaos"):
            assert http.post(path, data={"csrf": "forged", "confirm": "yes"}).status_code == 403, path
            assert http.post(path, data={"confirm": "yes"}).status_code == 403, path
        assert inbox_ids(http.get("/sandbox").text) == [qid, kept]  # nothing happened
        r = http.post(f"/sandbox/{qid}/release", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == f"/messages/{qid}?notice=sandbox-released"
        assert "queued for real delivery" in http.get(r.headers["location"]).text
        assert inbox_ids(http.get("/sandbox").text) == [kept]  # it left the sandbox
        assert http.get(f"/sandbox/{qid}").status_code == 404
        assert http.post(f"/sandbox/{qid}/release", data={"csrf": token}).status_code == 404  # once only
    with api.node.app.engine.connect() as conn:
        types = [e.type for e in conn.execute(sa.select(events.c.type).where(events.c.message_id == qid))]
        sandboxed = conn.execute(sa.select(messages.c.sandbox).where(messages.c.id == qid)).scalar()
    assert types.count("released") == 1 and not sandboxed  # queued for real delivery, no longer a capture


def test_clear_needs_the_confirmation_and_deletes_only_own_captures(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port, "alice", "bob")
    capture(api, mime("mine"))
    bobs = capture(api, mime("bob's", sender="bob@sender.test"), user="bob", sender="bob@sender.test")
    with browser(api) as http:
        sign_in(http)
        token = form_token(http.get("/sandbox"))
        r = http.post("/sandbox/clear", data={"csrf": token})
        assert r.headers["location"] == "/sandbox?notice=sandbox-clear-unconfirmed"
        assert len(inbox_ids(http.get("/sandbox").text)) == 1
        r = http.post("/sandbox/clear", data={"csrf": token, "confirm": "yes"})
        assert r.headers["location"] == "/sandbox?notice=sandbox-cleared"
        page = http.get(r.headers["location"]).text
        assert inbox_ids(page) == [] and "No captured mail yet" in page and "inbox was cleared" in page
    wait_status(api.node, bobs, {"bob@dest.test": "captured"})  # bob's is still there


def test_chaos_settings_are_shown_and_changed_and_a_real_account_is_told_how_mail_gets_here(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port, "alice")
    with browser(api) as http:
        sign_in(http)
        r = http.get("/sandbox")
        page = r.text
        assert "Now: none." in page
        token = form_token(r)
        r = http.post("/sandbox/chaos", data={"csrf": token, "rcpt_fraction": "0.25", "rcpt_code": "452",
                                              "data_fraction": "0", "data_code": "451"})
        assert r.headers["location"] == "/sandbox?notice=sandbox-chaos-saved"
        account = api.node.app.accounts.get("alice")
        assert account is not None and account.sandbox and account.chaos is not None
        assert {k: (f.fraction, f.code) for k, f in parse(account.chaos).items()} == {"rcpt": (0.25, 452)}
        page = http.get("/sandbox").text
        assert re.search(r"Now: RCPT\s+25% 452\.", page) and 'value="0.25"' in page
        for bad in ({"rcpt_fraction": "2"}, {"rcpt_fraction": "0.5", "rcpt_code": "421"},
                    {"data_fraction": "x"}, {"data_fraction": "0.1", "data_code": "250"}):
            r = http.post("/sandbox/chaos", data={"csrf": token, **bad})
            assert r.headers["location"] == "/sandbox?notice=sandbox-chaos-invalid", bad
        assert api.node.app.accounts.get("alice").chaos == account.chaos  # type: ignore[union-attr]
        http.post("/sandbox/chaos", data={"csrf": token, "rcpt_fraction": "", "data_fraction": ""})
        assert api.node.app.accounts.get("alice").chaos is None  # type: ignore[union-attr]
    with browser(api) as http:  # bob is a real account: told so, no chaos form, and it cannot turn chaos on
        sign_in(http, "bob")
        r = http.get("/sandbox")
        page = r.text
        assert "not a sandbox account" in page and "mailrelay account sandbox bob on" in page
        assert 'action="/sandbox/chaos"' not in page
        r = http.post("/sandbox/chaos", data={"csrf": form_token(r), "rcpt_fraction": "1"})
        assert r.headers["location"] == "/sandbox?notice=sandbox-not-sandbox"
        bob = api.node.app.accounts.get("bob")
        assert bob is not None and not bob.sandbox and bob.chaos is None


def test_the_inbox_stream_says_changed_when_mail_is_captured(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port)
    with browser(api) as http:
        sign_in(http)
        with http.stream("GET", "/sandbox/stream") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            assert next(lines) == "retry: 1000"
            time.sleep(0.3)  # the stream has read where the account's events stand
            qid = capture(api, mime("live capture"))
            assert next(line for line in lines if line.startswith("event:")) == "event: changed"
        assert inbox_ids(http.get("/sandbox/rows").text) == [qid]  # what the page then fetches


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # paging is the inbox's query, tested on both
def test_paging_goes_from_the_newest_fifty_to_older_ones_and_back(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port)
    client = api.node.submission("alice", PASSWORD)
    for n in range(PAGE_ROWS + 1):
        client.sendmail("alice@sender.test", ["bob@dest.test"], mime(f"paged {n}"))
    client.quit()
    engine = api.node.app.engine
    deadline = time.monotonic() + 30
    while Inbox(engine).count(account="alice") < PAGE_ROWS + 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with browser(api) as http:
        sign_in(http)
        first = http.get("/sandbox").text
        assert len(inbox_ids(first)) == PAGE_ROWS and "paged 50" in first and "paged 0<" not in first
        assert 'href="/sandbox?page=2" rel="next"' in first and 'rel="prev"' not in first
        second = http.get("/sandbox", params={"page": "2"}).text
        assert len(inbox_ids(second)) == 1 and "paged 0<" in second
        assert 'href="/sandbox?page=1" rel="prev"' in second and 'rel="next"' not in second
        found = http.get("/sandbox", params={"q": "paged 4"}).text  # 4, 40..49
        assert len(inbox_ids(found)) == 11 and 'rel="next"' not in found
