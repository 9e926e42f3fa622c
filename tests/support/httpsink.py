"""A webhook receiver on loopback: a stdlib HTTP server in a thread that records every POST and
can answer the first N of them with an error (to test retries)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Post:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    path: str = "/hook"
    fail_first: int = 0  # answer `fail_status` to this many POSTs first
    fail_status: int = 500
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def accepted(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.status == 200]


@contextmanager
def http_receiver(path: str = "/hook", *, fail_status: int = 500) -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rcv = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rcv.lock:
                status = rcv.fail_status if len(rcv.posts) < rcv.fail_first else 200
                rcv.posts.append(Post({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rcv = Receiver(server, path=path, fail_status=fail_status)
    holder.append(rcv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rcv
    finally:
        server.shutdown()
        server.server_close()
