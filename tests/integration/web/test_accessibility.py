"""axe-core (npm, pinned in tests/node) on the dashboard's main pages in the real browser: no
serious or critical violation of WCAG 2 A/AA rules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.integration.http.conftest import APINode
from tests.integration.web.support import send, sign_in_by_keyboard

AXE = Path(__file__).parents[2] / "node" / "node_modules" / "axe-core" / "axe.min.js"
REQUIRE = os.environ.get("MAILRELAY_TEST_REQUIRE_NODE") == "1"
PAGES = ["/activity"]  # and the first message's page


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


def test_main_pages_have_no_serious_violation(axe_page: Page, api: APINode) -> None:
    send(api, "alice", "accessible")
    sign_in_by_keyboard(axe_page, api)
    queue_id = axe_page.locator("td a code").first.inner_text().split("@")[0].split(".")[-1]
    checked = {}
    for path in [*PAGES, axe_page.locator("td a").first.get_attribute("href") or ""]:
        axe_page.goto(f"{api.url}{path}")
        checked[path] = serious(axe_page)
    bad = {p: v for p, v in checked.items() if v}
    assert queue_id and not bad, "\n".join(f"{p}: {v}" for p, v in bad.items())
