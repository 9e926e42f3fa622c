"""Ports for servers that a test starts in another process and must name in advance.

Binding port 0 and closing the socket gives a port that is free *now*; before the server binds
it, the kernel may hand it to another socket's port-0 bind, or another pytest worker may choose
it too (seen: a TLS client greeted by another test's plain SMTP listener). Ports from here come
from below the kernel's ephemeral range (32768 and up on Linux, so no port-0 bind takes them),
from a block of their own per pytest-xdist worker, each checked free and handed out once.
"""

from __future__ import annotations

import os
import socket
import threading

FIRST = 20_000
BLOCK = 1_000  # ports per worker: twelve workers fit below 32768; a worker wraps around its block
WORKERS = (32_768 - FIRST) // BLOCK
_lock = threading.Lock()


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ... (absent when not parallel)
    return int(name[2:]) % WORKERS if name[2:].isdigit() else 0


_start = FIRST + _worker() * BLOCK
_offset = 0


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))  # no SO_REUSEADDR: a port still in TIME_WAIT counts as taken
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *also: str) -> int:
    """A port free on `host` (and on every address of `also`), never given out before in this
    process, and outside other workers' blocks and the ephemeral range."""
    global _offset
    with _lock:
        for _ in range(BLOCK):
            port = _start + _offset
            _offset = (_offset + 1) % BLOCK
            if all(_bindable(h, port) for h in (host, *also)):
                return port
    raise RuntimeError(f"no free port in {_start}-{_start + BLOCK - 1}")
