"""Screenshots of the dashboard for docs/ and the README: `make screenshots`.

Starts a real `mailrelay serve` in a temporary folder (SQLite, HTTP API and dashboard on
loopback, delivery through a route to a local recipient server that takes most mail, defers
`later@` and refuses `bounce@`), makes a shop account, a sandbox account and an operator, sends
some mail through the HTTP API, and photographs the main pages with Chromium (Playwright, the
browser the tests use). Everything stays on 127.0.0.1; the PNGs land beside this script.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).parent
PASSWORD = "correct-horse-battery-staple"  # noqa: S105 - the example accounts' password, shown in docs
CHROMIUM = os.environ.get("MAILRELAY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 800


class Recipients:
    """The remote side: takes mail, defers later@..., refuses bounce@..."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("bounce@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("later@"):
            return "451 4.2.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(folder: Path, *args: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(folder / "mailrelay.toml"), *args],
                          cwd=folder, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"mailrelay {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def server(folder: Path, sink_port: int) -> Iterator[str]:
    smtp, http = free_port(), free_port()
    (folder / "mailrelay.toml").write_text(f"""
[server]
hostname = "mx.mailrelay.example"
data_dir = "{folder / 'data'}"
[submission]
require_own_domain = false
[listener.smtp]
listen = ["127.0.0.1:{smtp}"]
[listener.submission]
enabled = false
[listener.submissions]
enabled = false
[listener.alt]
enabled = false
[delivery]
processes = 1
retry_first = 600
[delivery.routes."*"]
host = "127.0.0.1"
port = {sink_port}
tls = "none"
[webhooks]
allow_private_targets = true
[http]
listen = "127.0.0.1:{http}"
processes = 1
""")
    proc = subprocess.Popen([sys.executable, "-m", "mailrelay", "-c", str(folder / "mailrelay.toml"), "serve"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"
    try:
        for _ in range(300):  # up to 30 s
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/login", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit("mailrelay serve did not start within 30 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def send(url: str, key: str, sender: str, to: str, subject: str, html: str | None = None) -> None:
    content = [{"type": "text/plain", "value": f"{subject}\n\nSent for the screenshots."}]
    if html:
        content.append({"type": "text/html", "value": html})
    answer = httpx.post(f"{url}/v3/mail/send", headers={"Authorization": f"Bearer {key}"}, timeout=30, json={
        "personalizations": [{"to": [{"email": to}]}], "from": {"email": sender, "name": "Example Shop"},
        "subject": subject, "content": content, "categories": ["orders"]})
    answer.raise_for_status()


def sign_in(page: Page, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/activity")


def shoot(page: Page, url: str, path: str, name: str) -> None:
    page.goto(f"{url}{path}")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(HERE / f"{name}.png"), full_page=False)
    print(f"  {name + '.png':<22} {path}")


def key_of(output: str) -> str:
    return next(word for word in output.split() if word.startswith(("SG.", "MR.")))


def main() -> None:
    sink = Controller(Recipients(), hostname="127.0.0.1", port=free_port())
    sink.start()
    with tempfile.TemporaryDirectory(prefix="mailrelay-shots-") as tmp, server(Path(tmp), sink.port) as url:
        folder = Path(tmp)
        cli(folder, "account", "create", "shop", "--plan", "unlimited", "--password-stdin", stdin=PASSWORD + "\n")
        cli(folder, "account", "create", "qa", "--sandbox", "--password-stdin", stdin=PASSWORD + "\n")
        cli(folder, "account", "create", "ops", "--password-stdin", stdin=PASSWORD + "\n")
        cli(folder, "operator", "grant", "ops")
        key = key_of(cli(folder, "account", "key", "create", "shop", "--label", "website"))
        qa_key = key_of(cli(folder, "account", "key", "create", "qa", "--label", "ci"))
        cli(folder, "domain", "add", "shop.example", "--account", "shop")
        for i, to in enumerate(["ann@customer.example", "later@customer.example", "bob@customer.example",
                                "bounce@customer.example", "cy@customer.example", "dee@customer.example"]):
            send(url, key, "orders@shop.example", to, f"Your order #10{i + 40} has shipped")
        send(url, qa_key, "tests@qa.example", "someone@customer.example", "Welcome to Example Shop",
             html='<h1>Welcome!</h1><p>Thanks for joining. <a href="https://shop.example/start">Start here</a>.</p>'
                  '<img src="https://images.example/banner.png" alt="banner">')
        time.sleep(3)  # deliveries, a deferral and a bounce happen
        print("screenshots:")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            sign_in(page, url, "shop")
            shoot(page, url, "/activity", "activity")
            shoot(page, url, page.locator("td a").nth(4).get_attribute("href") or "/activity", "message")
            for path in ("/domains", "/domains/shop.example", "/keys", "/webhooks", "/suppressions", "/usage"):
                shoot(page, url, path, path.strip("/").replace("/", "-").replace(".", "-"))
            page.context.clear_cookies()
            sign_in(page, url, "qa")
            shoot(page, url, "/sandbox", "sandbox")
            shoot(page, url, page.locator("td a").first.get_attribute("href") or "/sandbox", "sandbox-message")
            page.context.clear_cookies()
            sign_in(page, url, "ops")
            for path in ("/operator/queue", "/operator/accounts", "/operator/nodes"):
                shoot(page, url, path, path.strip("/").replace("/", "-"))
            browser.close()
    sink.stop()


if __name__ == "__main__":
    main()
