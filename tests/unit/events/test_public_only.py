"""The webhook transport's network backend: only public addresses, connected to as checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from mailrelay.events.poster import _PublicOnly, public_transport


class Recording(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect; opens nothing (no traffic leaves the test)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        raise httpcore.ConnectError("recorded")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise AssertionError("not used")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "app.localhost", "10.1.2.3", "169.254.169.254",
                                  "::1", "::ffff:192.168.0.1", "100.64.0.1", "0.0.0.0"])
def test_internal_addresses_are_refused_before_any_connection(host: str) -> None:
    inner = Recording()
    with pytest.raises(httpcore.ConnectError, match="internal address"):
        asyncio.run(_PublicOnly(inner).connect_tcp(host, 443))
    assert inner.asked == []


def test_a_public_address_is_connected_to_as_checked() -> None:
    inner = Recording()
    with pytest.raises(httpcore.ConnectError, match="recorded"):
        asyncio.run(_PublicOnly(inner).connect_tcp("93.184.216.34", 443))
    assert inner.asked == [("93.184.216.34", 443)]


def test_unix_sockets_are_refused_and_the_transport_uses_the_backend() -> None:
    with pytest.raises(httpcore.ConnectError):
        asyncio.run(_PublicOnly(Recording()).connect_unix_socket("/run/x.sock"))
    pool = public_transport()._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert isinstance(pool._network_backend, _PublicOnly)
