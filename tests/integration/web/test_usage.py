"""The usage page over real HTTP: the plan's counters, and the SVG chart of the last 30 days
whose numbers are those of mail really sent, delivered, bounced and deferred (a loopback MX)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable

from tests.integration.delivery.conftest import Behaviour, RemoteMX, delivery_toml
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, browser, send, sign_in
from tests.support.dnsserver import FakeDNS


def chart_points(page: str) -> dict[tuple[str, str], int]:
    """The SVG's data points, by (day, series): from each point's <title>."""
    svg = re.search(r"<svg id=\"usage-chart\".*?</svg>", page, re.S)
    assert svg is not None
    return {(d, s): int(n) for d, s, n in re.findall(r"<title>(\d{4}-\d\d-\d\d) ([a-z]+): (\d+)</title>",
                                                      svg.group(0))}


def quota_row(page: str, label: str) -> list[str]:
    row = re.search(rf"<th scope=\"row\">{label} \([^)]*\)</th>(.*?)</tr>", page, re.S)
    assert row is not None, page
    return [re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]


def test_the_chart_counts_the_accounts_own_mail_per_day(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    # bad@ is refused (bounced, and its DSN delivered to alice@sender.test on the same MX); the
    # first DATA is answered 451, so ok@ is deferred once, then delivered
    remote_mx("127.0.0.2", Behaviour(defer_first=1, reject={"bad@dest.test"}))
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.mx("sender.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    live = api_factory(delivery_toml(fake_dns.address, mx_port))
    with live.client(live.key()) as api:
        r = api.post("/v3/mail/send", json={
            "personalizations": [{"to": [{"email": "ok@dest.test"}, {"email": "bad@dest.test"}]}],
            "from": {"email": "alice@sender.test"}, "subject": HOSTILE,
            "content": [{"type": "text/plain", "value": "hi"}]})
        assert r.status_code == 202, r.text
    send(live, "bob", "bob's")  # not alice's
    today = dt.datetime.now(dt.UTC).date()
    with browser(live) as http:
        sign_in(http)
        deadline = time.monotonic() + 30
        while True:
            page = http.get("/usage").text
            points = chart_points(page)
            if points[(today.isoformat(), "delivered")] == 2 and points[(today.isoformat(), "bounced")]:
                break
            assert time.monotonic() < deadline, points
            time.sleep(0.2)
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(29, -1, -1)]
    assert sorted({d for d, _ in points}) == days  # 30 days, today last
    expected = {"sent": 2, "delivered": 2, "bounced": 1, "deferred": 1}
    for (day, series), n in points.items():
        assert n == (expected[series] if day == today.isoformat() else 0), (day, series, n)
    # drawn where they belong: today's points on the grid line labelled 2 (sent, delivered) and 1
    for n in (1, 2):
        tick = re.search(rf'<line x1="\d+" x2="\d+" y1="([\d.]+)" y2="[\d.]+"></line>\s*<text [^>]*>{n}</text>', page)
        assert tick is not None, page
        on_it = re.findall(rf'cy="{tick.group(1)}" r="3"><title>{today.isoformat()} ([a-z]+): {n}</title>', page)
        assert sorted(on_it) == sorted(k for k, v in expected.items() if v == n)
    # the same numbers in the table for screen readers, and in the description
    row = re.search(rf"<tr><th scope=\"row\">{today.isoformat()}</th>(.*?)</tr>", page)
    assert row is not None and re.findall(r"<td>(\d+)</td>", row.group(1)) == ["2", "2", "1", "1"]
    assert "sent 2, delivered 2, bounced 1, deferred 1." in page
    # and the API's /v3/stats says the same
    with live.client(live.key()) as api:
        [stats] = api.get("/v3/stats", params={"start_date": today.isoformat()}).json()
    m = stats["stats"][0]["metrics"]
    assert (m["processed"], m["delivered"], m["bounces"] + m["blocks"] + m["invalid_emails"], m["deferred"]) == (
        2, 2, 1, 1)
    assert 'role="img"' in page and 'aria-labelledby="chart-title chart-desc"' in page
    assert " style=" not in page and "<style" not in page and "<script" not in page  # CSP: none inline
    # the plan's counters: alice's two recipients against the free plan's 200 a day
    assert quota_row(page, "Today")[:2] == ["2", "200"]
    assert quota_row(page, "This month")[:2] == ["2", "no limit"]
    assert "free" in page


def test_usage_needs_a_session_and_an_account_without_mail_sees_zeros(api: APINode) -> None:
    send(api, "alice", "alice's")
    with browser(api) as http:
        assert http.get("/usage").headers["location"] == "/login"
        sign_in(http, "bob")
        page = http.get("/usage").text
    assert set(chart_points(page).values()) == {0} and len(chart_points(page)) == 30 * 4
    assert quota_row(page, "Today")[0] == "0"
