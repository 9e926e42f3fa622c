"""The sandbox inbox in a real browser (Playwright driving Debian's Chromium): hostile HTML runs
nothing, loads nothing and leaves the page intact; a remote image is fetched only after the
click; a captured message is read and released to a real (loopback) MX."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page

from tests.integration.delivery.conftest import RemoteMX
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, sign_in_by_keyboard
from tests.integration.web.test_sandbox import PNG, capture, mime, sandbox_api
from tests.support.dnsserver import FakeDNS

# What is tested here is the browser's side; both databases are covered by test_sandbox.py.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Pixels:
    """A loopback HTTP server that records every request it gets (path, Referer)."""

    def __init__(self) -> None:
        seen: list[tuple[str, str | None]] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Referer")))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


@pytest.fixture
def pixels() -> Iterator[Pixels]:
    server = Pixels()
    yield server
    server.server.shutdown()
    server.server.server_close()


def hostile_html(url: str) -> str:
    return f"""<html><head><base href="{url}/base/">
<meta http-equiv="refresh" content="0;url={url}/refresh">
<style>@import url({url}/import.css); body {{ background: url({url}/background.png) }}</style>
<link rel="stylesheet" href="{url}/style.css"></head>
<body><script>alert("script")</script><img src="x" onerror="alert('onerror')">
<a id="js" href="javascript:alert('link')">a javascript: link</a>
</iframe><script>parent.document.body.innerHTML = "pwned"</script>
<form action="{url}/post" method="post"><input name="a" value="b" aria-label="a"><button id="go">go</button></form>
<svg onload="alert('svg')"></svg><iframe src="javascript:alert('frame')"></iframe><object data="{url}/object"></object>
<div style="position:fixed;top:0;left:0;width:100vw;height:100vh">covering</div>
<img id="remote" src="{url}/pixel.png" alt="pixel"><p id="marker">hostile body {HOSTILE}</p></body></html>"""


def test_hostile_html_runs_nothing_and_loads_nothing_until_remote_images_are_clicked(
        page: Page, api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int, pixels: Pixels) -> None:
    api = sandbox_api(api_factory, fake_dns, mx_port)
    qid = capture(api, mime(f"hostile {HOSTILE}", hostile_html(pixels.url)))
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in_by_keyboard(page, api)
    page.goto(f"{api.url}/sandbox")
    page.get_by_role("link", name=f"hostile {HOSTILE}").click()
    page.wait_for_url(f"**/sandbox/{qid}")
    frame = page.frame_locator("iframe.sandbox-html")
    frame.locator("#marker").wait_for()
    assert frame.locator("#marker").inner_text().startswith("hostile body")  # rendered, its scripts inert
    # (the frame's full-size fixed <div> covers the frame only, so follow them by keyboard)
    frame.locator("#js").press("Enter")  # a javascript: link does nothing in a frame without scripts
    frame.locator("#go").press("Enter")  # nor does a form
    page.wait_for_timeout(1200)  # time for a refresh, an onerror, a load
    assert dialogs == []
    assert pixels.paths() == [], "nothing is fetched from the network before the click"
    assert page.url == f"{api.url}/sandbox/{qid}"  # the page was not navigated
    assert page.get_by_role("heading", name=f"hostile {HOSTILE}").is_visible()  # the shell is intact
    assert page.get_by_role("button", name="Sign out").is_visible()
    assert page.get_by_role("button", name="Release: deliver for real").is_visible()
    assert page.locator("script:not([src])").count() == 0 and page.locator("iframe").count() == 1
    assert frame.locator("#marker").is_visible()  # the frame was not navigated away by the refresh

    page.get_by_role("button", name="Show remote images").click()  # by the mouse: nothing covers the page
    page.wait_for_url(f"**/sandbox/{qid}?images=1*")
    frame.locator("#marker").wait_for()
    deadline = time.monotonic() + 5
    while "/pixel.png" not in pixels.paths():
        assert time.monotonic() < deadline, pixels.seen
        time.sleep(0.05)
    page.wait_for_timeout(300)
    assert dialogs == []
    # images only, still: no refresh, no stylesheet, no form post, no object, and no Referer
    assert set(pixels.paths()) <= {"/pixel.png", "/background.png"}, pixels.seen
    assert all(referer is None for _, referer in pixels.seen)
    assert frame.locator("#remote").evaluate("img => img.naturalWidth") == 1


def test_a_captured_message_is_read_in_the_browser_and_released_to_the_real_mx(
        page: Page, api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = sandbox_api(api_factory, fake_dns, mx_port)
    qid = capture(api, mime("Welcome aboard", "<h1>Welcome, Bob</h1><p>Your account is ready.</p>", inline_png=True))
    sign_in_by_keyboard(page, api)
    page.goto(f"{api.url}/sandbox")
    page.get_by_role("link", name="Welcome aboard").click()
    frame = page.frame_locator("iframe.sandbox-html")
    assert frame.get_by_role("heading", name="Welcome, Bob").is_visible()
    assert page.get_by_text("plain words", exact=True).is_visible()  # the text part
    assert mx.messages == [], "captured, not sent"
    page.get_by_role("button", name="Release: deliver for real").click()
    page.wait_for_url(f"**/messages/{qid}?notice=sandbox-released")
    assert page.get_by_text("queued for real delivery").is_visible()
    [got] = mx.wait_for(1)
    assert got.rcpt_tos == ["bob@dest.test"] and b"Welcome, Bob" in got.data
    page.goto(f"{api.url}/sandbox")
    assert page.get_by_text("No captured mail yet").is_visible()
