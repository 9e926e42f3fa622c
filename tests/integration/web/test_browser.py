"""The dashboard in a real browser: Playwright driving Debian's Chromium (by path)."""

from __future__ import annotations

import time

from playwright.sync_api import Page

from tests.integration.delivery.test_delivery import submit
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, send, sign_in_by_keyboard


def test_sign_in_with_the_keyboard_and_see_the_mail_sent(page: Page, api: APINode) -> None:
    send(api, "alice", "browser hello")
    sign_in_by_keyboard(page, api)
    assert page.get_by_role("heading", name="Activity").is_visible()
    assert page.get_by_role("cell", name="browser hello").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    page.goto(f"{api.url}/activity")
    assert page.url.endswith("/login")


def test_hostile_message_content_runs_nothing_and_leaves_the_page_intact(page: Page, api: APINode) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    send(api, "alice", f"subject {HOSTILE} <a href=\"javascript:alert(3)\">x</a> <style>body{{display:none}}</style>")
    sign_in_by_keyboard(page, api)
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("script:not([src='/static/live.js'])").count() == 0 and page.locator("img").count() == 0
    assert page.get_by_role("button", name="Sign out").is_visible()  # the shell is intact and shown
    assert page.get_by_role("cell", name="<script>", exact=False).first.is_visible()  # as text


def test_mail_sent_over_smtp_while_the_page_is_open_appears_within_two_seconds_and_opens_with_its_timeline(
        api: APINode, page: Page) -> None:
    sign_in_by_keyboard(page, api)
    assert page.get_by_text("No mail yet").is_visible()
    page.wait_for_timeout(500)  # the page's event stream is open
    sent = time.monotonic()
    queue_id = submit(api.node, ["carol@dest.test"], b"From: alice@sender.test\r\nSubject: live one\r\n\r\nhi\r\n")
    page.get_by_role("cell", name="live one").wait_for(timeout=5000)
    assert time.monotonic() - sent < 2.0
    assert not page.get_by_text("No mail yet").is_visible()
    page.get_by_role("link", name=queue_id).click()
    page.wait_for_url(f"**/messages/{queue_id}")
    timeline = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Reply"))
    assert timeline.get_by_role("cell", name="carol@dest.test").first.is_visible()
    assert timeline.get_by_role("cell", name="processed").is_visible()  # accepted over SMTP
    assert page.get_by_text("Subject: live one").is_visible()  # the header section


def test_an_account_cannot_open_another_accounts_message_by_its_url(page: Page, api: APINode) -> None:
    send(api, "bob", "bob's secret")
    sign_in_by_keyboard(page, api, "bob")
    href = page.get_by_role("row").filter(has_text="bob's secret").get_by_role("link").get_attribute("href")
    assert href and href.startswith("/messages/")
    assert page.goto(f"{api.url}{href}").status == 200  # bob sees it
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    sign_in_by_keyboard(page, api, "alice")
    answer = page.goto(f"{api.url}{href}")
    assert answer is not None and answer.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    assert "bob's secret" not in page.content()
