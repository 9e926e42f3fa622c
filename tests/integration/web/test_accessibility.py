"""axe-core (npm, pinned in tests/node) on the dashboard's main pages in the real browser: no
serious or critical violation of WCAG 2 A/AA rules."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.integration.http.conftest import APINode
from tests.integration.web.support import send, sign_in_by_keyboard
from tests.integration.web.test_sandbox import capture, mime, sandbox_api
from tests.support.dnsserver import FakeDNS

AXE = Path(__file__).parents[2] / "node" / "node_modules" / "axe-core" / "axe.min.js"
REQUIRE = os.environ.get("MAILRELAY_TEST_REQUIRE_NODE") == "1"
# What axe checks is the markup, the same on either database.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PAGES = ["/activity", "/sandbox", "/domains", "/keys", "/webhooks", "/webhooks/parse", "/suppressions",
         "/suppressions/groups", "/usage"]  # and the first message's page


@pytest.fixture
def axe_page(chromium: Browser) -> Iterator[Page]:
    """A page whose CSP lets the test add axe's script (the server's CSP forbids it otherwise)."""
    if not AXE.is_file():
        message = f"axe-core missing at {AXE}: `make test` runs npm ci in tests/node"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    context = chromium.new_context(bypass_csp=True)
    yield context.new_page()
    context.close()


OPERATOR_PAGES = ["/operator", "/operator/accounts", "/operator/queue", "/operator/nodes"]


def violations(page: Page) -> list[dict[str, Any]]:
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}))"
        ".violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,"
        " target: v.nodes[0].target.join(' ')}))")
    return found


def serious(page: Page) -> list[dict[str, Any]]:
    return [v for v in violations(page) if v["impact"] in ("serious", "critical")]


def test_sign_in_page_has_no_serious_violation(axe_page: Page, api: APINode) -> None:
    axe_page.goto(f"{api.url}/login")
    assert serious(axe_page) == []


def test_every_account_page_has_no_serious_violation(
        axe_page: Page, api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port, "bob")
    send(api, "alice", "accessible")
    api.node.app.domains.add("sender.test", "alice")
    api.node.app.accounts.set_operator("alice", True)
    sign_in_by_keyboard(axe_page, api)
    message = axe_page.locator("td a").first.get_attribute("href") or ""
    checked = {}
    for path in [*PAGES, *OPERATOR_PAGES, message, "/domains/sender.test"]:
        axe_page.goto(f"{api.url}{path}")
        checked[path] = serious(axe_page)
    axe_page.get_by_role("button", name="Sign out").click()
    captured = capture(api, mime("accessible", "<p>Hello <a href='https://example.com/'>there</a></p>",
                                 sender="bob@sender.test"), user="bob", sender="bob@sender.test")
    sign_in_by_keyboard(axe_page, api, "bob")
    for path in ["/sandbox", f"/sandbox/{captured}"]:
        axe_page.goto(f"{api.url}{path}")
        checked[f"{path} (sandbox account)"] = serious(axe_page)
    bad = {p: v for p, v in checked.items() if v}
    assert message.startswith("/messages/") and len(checked) == len(PAGES) + len(OPERATOR_PAGES) + 4
    assert not bad, "\n".join(f"{p}: {v}" for p, v in bad.items())
