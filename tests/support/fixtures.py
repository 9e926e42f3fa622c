"""Pytest fixtures from tests/support, registered for the whole suite in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import FakeDNS


@pytest.fixture
def fake_dns() -> Iterator[FakeDNS]:
    """A DNS server on 127.0.0.1 with an empty zone (everything NXDOMAIN), stopped after the test."""
    server = FakeDNS().start()
    try:
        yield server
    finally:
        server.stop()
