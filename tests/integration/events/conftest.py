"""A webhook receiver on loopback (stdlib HTTP server in a thread) that records every POST,
plus the delivery fixtures (node, remote MX servers, fake DNS)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.delivery.conftest import mx_port, remote_mx  # noqa: F401 - fixtures
from tests.integration.smtp.conftest import ca, node_factory  # noqa: F401 - fixtures


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def events(self) -> list[dict[str, Any]]:
        data = json.loads(self.body)
        assert isinstance(data, list)
        return data


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    fail_first: int = 0  # answer 500 to this many POSTs first
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"

    def accepted(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.status == 200]

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted POST, in arrival order."""
        return [e for p in self.accepted() for e in p.events]

    def wait(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events()
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver got {[(e['event'], e.get('email')) for e in self.events()]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rcv = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rcv.lock:
                status = 500 if len(rcv.posts) < rcv.fail_first else 200
                rcv.posts.append(Post({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rcv = Receiver(server)
    holder.append(rcv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rcv
    server.shutdown()
    server.server_close()
