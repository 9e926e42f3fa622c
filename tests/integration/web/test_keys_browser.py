"""API keys and domains in a real browser (Playwright driving Debian's Chromium): a key made on
the page logs in over SMTP until it is revoked on the page; a domain added shows its records."""

from __future__ import annotations

import smtplib

import pytest
from playwright.sync_api import Page

from tests.integration.http.conftest import APINode
from tests.integration.web.support import sign_in_by_keyboard

# What the browser does is the same on either database; the HTTP-level tests (test_keys.py,
# test_domains.py) run on both.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def allow_clipboard(page: Page, api: APINode) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=api.url)


def test_a_key_made_in_the_browser_sends_over_smtp_until_revoked_there(page: Page, api: APINode) -> None:
    allow_clipboard(page, api)
    sign_in_by_keyboard(page, api)
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Only the scopes chosen below").check()
    page.get_by_text("Scopes", exact=True).click()  # opens the list of scopes
    page.get_by_label("mail.send", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_text("will not be shown again").is_visible()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("SG.") and len(secret) == 69
    page.get_by_role("button", name="Copy key").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    node = api.node
    node.submission(user="apikey", password=secret).quit()  # the key logs in

    page.goto(f"{api.url}/keys")  # a later visit never shows the secret again
    assert page.locator("#new-secret").count() == 0 and secret not in page.content()
    page.get_by_role("link", name="Revoke “laptop”…").click()
    page.get_by_role("button", name="Revoke key").click()
    page.wait_for_url("**/keys?notice=key-revoked")
    assert page.get_by_role("status").inner_text().startswith("The key was revoked")

    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        node.submission(user="apikey", password=secret)
    assert refused.value.smtp_code == 535


def test_add_a_domain_in_the_browser_and_see_its_records(page: Page, api: APINode) -> None:
    allow_clipboard(page, api)
    sign_in_by_keyboard(page, api)
    page.get_by_role("link", name="Domains").click()
    page.get_by_label("Domain", exact=True).fill("shop.test")
    page.get_by_role("button", name="Add domain").click()
    page.wait_for_url("**/domains/shop.test?notice=domain-added")
    records = page.get_by_role("table")
    for name in ("mr1._domainkey.shop.test", "shop.test", "_dmarc.shop.test"):
        assert records.get_by_text(name, exact=True).first.is_visible()
    dkim = page.locator("#rec-1-value").inner_text()
    assert dkim.startswith("v=DKIM1; k=rsa; p=")
    page.locator("button[data-copy='rec-1-value']").click()
    assert page.evaluate("navigator.clipboard.readText()") == dkim
    assert page.get_by_role("button", name="Verify").is_visible()
