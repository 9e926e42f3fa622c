"""What the dashboard's tests share: a cookie-keeping HTTP client, sign-in (by form and by
keyboard), sending mail through the API."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page

from tests.integration.http.conftest import APINode
from tests.integration.smtp.conftest import PASSWORD

HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)></iframe>'


def browser(api: APINode) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=30, trust_env=False, follow_redirects=False)


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(http: httpx.Client, name: str = "alice", password: str = PASSWORD) -> httpx.Response:
    token = form_token(http.get("/login"))
    return http.post("/login", data={"csrf": token, "name": name, "password": password})


def send(api: APINode, account: str, subject: str) -> None:
    with api.client(api.key(account)) as http:
        r = http.post("/v3/mail/send", json={
            "personalizations": [{"to": [{"email": f"rcpt-{account}@dest.test"}]}],
            "from": {"email": f"{account}@sender.test", "name": HOSTILE}, "subject": subject,
            "content": [{"type": "text/plain", "value": "hi"}]})
        assert r.status_code == 202, r.text


def sign_in_by_keyboard(page: Page, api: APINode, name: str = "alice", password: str = PASSWORD) -> None:
    page.goto(f"{api.url}/activity")
    assert page.url.endswith("/login")
    # the name field takes the focus itself (autofocus); type once it has it
    page.wait_for_function("document.activeElement && document.activeElement.id === 'name'")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/activity")
