"""A real mailrelay node on loopback, in a background thread, for socket-level tests.

Each test gets its own database (SQLite file or a PostgreSQL schema, see tests/conftest.py),
its own trustme CA and server certificate, and listeners on ephemeral 127.0.0.1 ports.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme

from mailrelay.app import App
from mailrelay.settings import load_settings
from mailrelay.store import bodies
from mailrelay.store.schema import messages, recipients
from tests.integration.smtp.rawclient import RawClient, auth_plain
from tests.support.serve import merge_toml

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Node:
    app: App
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    client_ssl: ssl.SSLContext

    def port(self, listener: str) -> int:
        return self.app.smtp.bound[listener][0][1]

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.call(self.app.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def smtp(self, listener: str = "smtp", *, timeout: float = 10.0) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port(listener), local_hostname="client.test", timeout=timeout)

    def smtps(self, listener: str = "submissions", *, timeout: float = 10.0) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL("127.0.0.1", self.port(listener), local_hostname="client.test",
                                context=self.client_ssl, timeout=timeout)

    def submission(self, user: str = "alice", password: str = PASSWORD) -> smtplib.SMTP:
        """A logged-in client on the submission listener (STARTTLS, then AUTH)."""
        client = self.smtp("submission")
        client.starttls(context=self.client_ssl)
        client.login(user, password)
        return client

    def raw(self, listener: str = "smtp", *, implicit_tls: bool = False) -> RawClient:
        """A byte-level client that has read the greeting (and done TLS first if asked)."""
        client = RawClient(self.port(listener))
        if implicit_tls:
            client.sock = self.client_ssl.wrap_socket(client.sock, server_hostname="localhost")
        code, text = client.reply()
        assert code == 220, text
        return client

    def raw_login(self, listener: str = "submission", user: str = "alice", password: str = PASSWORD) -> RawClient:
        """A byte-level client after EHLO, STARTTLS, EHLO and a successful AUTH PLAIN."""
        client = self.raw(listener)
        client.cmd("EHLO client.test")
        assert client.cmd("STARTTLS")[0] == 220
        client.starttls(self.client_ssl)
        client.cmd("EHLO client.test")
        code, text = client.cmd(auth_plain(user, password))
        assert code == 235, text
        return client

    def stored(self) -> list[dict[str, Any]]:
        """Every message's row, with its content read back (store.bodies) as `trace_headers`
        and `body`, and its recipients."""
        with self.app.engine.connect() as conn:
            rows = conn.execute(sa.select(messages).order_by(messages.c.created_at)).mappings().all()
            content = bodies.load(conn, [row["id"] for row in rows])
            out = []
            for row in rows:
                rcpts = conn.execute(sa.select(recipients).where(recipients.c.message_id == row["id"])).mappings().all()
                stored = content[row["id"]]
                out.append({**row, "trace_headers": stored.trace_headers, "body": stored.body,
                            "recipients": [dict(r) for r in rcpts]})
            return out


TOML_BASE = """
[server]
hostname = "mx.mailrelay.test"
data_dir = "data"
demo_account = false
shutdown_timeout = 5
[tls]
cert_file = "{cert}"
key_file = "{key}"
[storage]
url = "{url}"
[smtp]
idle_timeout = 30
[submission]
require_own_domain = false
[delivery]
enabled = false
[webhooks]
allow_private_targets = true
[listener.smtp]
listen = ["127.0.0.1:0"]
[listener.submission]
listen = ["127.0.0.1:0"]
[listener.submissions]
listen = ["127.0.0.1:0"]
[listener.alt]
listen = ["127.0.0.1:0"]
"""


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def node_factory(tmp_path: Path, db_url: str, fast_hasher: Any, ca: trustme.CA) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []
    cert = ca.issue_cert("mx.mailrelay.test", "localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)

    def start(extra: str = "", *, accounts: bool = True) -> Node:
        config = tmp_path / f"mailrelay-{len(nodes)}.toml"
        config.write_text(merge_toml(TOML_BASE.format(cert=cert_file, key=key_file, url=db_url), extra))
        settings = load_settings(config, env={})
        app = App(settings, hasher=fast_hasher)
        if accounts and app.accounts.get("alice") is None:
            app.accounts.create("alice", PASSWORD)
            app.accounts.create("bob", PASSWORD)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failures: list[Any] = []

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                failures.extend(await app.start())
                started.set()

            task = loop.create_task(boot())
            loop.run_forever()
            assert task.done()
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert started.wait(15), "server did not start"
        node = Node(app, loop, thread, client_ssl)
        node.bind_failures = failures  # type: ignore[attr-defined]
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(node_factory: Callable[..., Node]) -> Node:
    return node_factory()
