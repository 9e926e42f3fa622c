"""The operator pages in a real browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page

from mailrelay.spool.reader import QueueReader
from tests.integration.delivery.conftest import Behaviour, RemoteMX, delivery_toml
from tests.integration.http.conftest import APINode
from tests.integration.web.support import send, sign_in_by_keyboard
from tests.support.dnsserver import FakeDNS

# The first retry an hour away: only the operator's bulk retry can bring the mail out in time.
SLOW_RETRY = "[delivery]\nretry_first = 3600\nretry_max = 7200\n"


def test_an_operator_bulk_retries_a_deferred_domain(
        page: Page, api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2", Behaviour(defer_first=1))  # 451 to the first DATA, then 250
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = api_factory(delivery_toml(fake_dns.address, mx_port) + SLOW_RETRY)
    api.node.app.accounts.set_operator("alice", True)
    send(api, "alice", "held up")  # to rcpt-alice@dest.test
    reader = QueueReader(api.node.app.engine)
    deadline = time.monotonic() + 20
    while reader.by_state().get("deferred") != 1:
        assert time.monotonic() < deadline, reader.by_state()
        time.sleep(0.1)
    assert mx.messages == []

    sign_in_by_keyboard(page, api)
    page.get_by_role("link", name="Operator").click()
    page.get_by_role("navigation", name="Operator pages").get_by_role("link", name="Queue").click()
    page.get_by_label("Recipients").select_option("deferred")
    page.get_by_role("button", name="Show").click()
    row = page.get_by_role("row", name="dest.test")
    assert row.get_by_role("cell").nth(0).inner_text() == "1"  # total
    row.get_by_role("link", name="Retry now dest.test").click()
    assert page.get_by_text("0 queued and 1 deferred").is_visible()
    page.get_by_role("button", name="Retry now: 1 recipient of dest.test").click()
    page.wait_for_url("**/operator/queue?state=deferred&notice=op-retried")
    assert page.get_by_role("status").is_visible()

    [received] = mx.wait_for(1, timeout=10)  # delivered at once, not in an hour
    assert "rcpt-alice@dest.test" in received.rcpt_tos
    deadline = time.monotonic() + 10
    while reader.by_state() != {"delivered": 1}:  # the outcome is written after the MX's 250
        assert time.monotonic() < deadline, reader.by_state()
        time.sleep(0.1)
