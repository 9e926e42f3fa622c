"""The webhooks page in a real browser (Playwright driving Debian's Chromium): the test event
button used with the keyboard, its outcome shown in the last POSTs; no CSP violation on the
webhooks, suppressions and usage pages (the usage chart is inline SVG)."""

from __future__ import annotations

import json
import os

from playwright.sync_api import Page

from tests.integration.http.conftest import APINode
from tests.integration.web.support import send, sign_in_by_keyboard
from tests.support.httpsink import http_receiver

SHOTS = os.environ.get("MAILRELAY_TEST_SCREENSHOTS")  # a folder: screenshots of the pages go there


def test_the_test_event_button_by_keyboard_and_no_csp_violation(page: Page, api: APINode) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    send(api, "alice", "for the chart")
    with http_receiver("/events") as receiver:
        sign_in_by_keyboard(page, api)
        page.goto(f"{api.url}/webhooks")
        page.get_by_label("URL to post a sample").fill(receiver.url)
        page.get_by_role("button", name="Send test event").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/webhooks?notice=test_ok")
        assert page.get_by_role("status").inner_text().startswith("The test event was posted")
        row = page.locator("#posts tbody tr").first
        assert row.locator("td").nth(3).inner_text() == "200" and row.locator("td").nth(2).inner_text() == "test"
        [post] = receiver.accepted()
        assert json.loads(post.body)[0]["event"] == "processed"
    for path in ("/webhooks", "/webhooks/parse", "/suppressions", "/usage"):
        page.goto(f"{api.url}{path}")
        if SHOTS:
            page.screenshot(path=os.path.join(SHOTS, path.strip("/").replace("/", "-") + ".png"), full_page=True)
    assert page.locator("#usage-chart circle").count() == 120
    assert page.locator("#usage-chart").bounding_box() is not None
    assert not [e for e in errors if "Content Security Policy" in e], errors


