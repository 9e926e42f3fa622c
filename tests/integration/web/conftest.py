"""The dashboard is served by the HTTP API's server: the same node fixtures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.integration.delivery.conftest import mx_port, remote_mx
from tests.integration.http.conftest import api, api_factory, ca, node_factory

CHROMIUM = os.environ.get("MAILRELAY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE = os.environ.get("MAILRELAY_TEST_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"no Chromium at {CHROMIUM} (as root: apt-get install chromium)"
        if REQUIRE:
            pytest.fail(message + " (MAILRELAY_TEST_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    yield context.new_page()
    context.close()


__all__ = ["api", "api_factory", "ca", "mx_port", "node_factory", "remote_mx"]
