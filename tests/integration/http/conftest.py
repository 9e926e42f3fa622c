"""A real mailrelay node with its HTTP API on a loopback port, in a background thread.

The SMTP side is the node of tests/integration/smtp (same settings, same database fixtures); the
API is the same ASGI app and uvicorn server `mailrelay serve` runs in its HTTP process, here in
the node's own loop so a test can read the database and the queue directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mailrelay.http.server import HTTPServer
from tests.integration.smtp.conftest import Node, ca, node_factory

__all__ = ["ca", "node_factory"]  # the SMTP node's fixtures, used here


@dataclass
class APINode:
    node: Node
    server: HTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def key(self, account: str = "alice", **kwargs: Any) -> str:
        """A fresh full-access API key of `account`."""
        _, full = self.node.app.accounts.create_key(account, **kwargs)
        return full

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)


@pytest.fixture
def api_factory(node_factory: Callable[..., Node]) -> Iterator[Callable[..., APINode]]:
    servers: list[APINode] = []

    def start(extra: str = "", **kwargs: Any) -> APINode:
        node = node_factory('[http]\nlisten = "127.0.0.1:0"\n' + extra, **kwargs)
        server = node.app.build_http()
        assert node.call(server.start()), "the HTTP API did not start"
        api = APINode(node, server)
        servers.append(api)
        return api

    yield start
    for api in servers:
        if api.node.loop.is_running():
            api.node.call(api.server.stop())


@pytest.fixture
def api(api_factory: Callable[..., APINode]) -> APINode:
    return api_factory()
