"""Pytest fixtures from tests/support, registered for the whole suite in tests/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.dnsserver import FakeDNS
from tests.support.pgserver import PrivatePostgres, why_unusable
from tests.support.ports import free_port


@pytest.fixture
def fake_dns() -> Iterator[FakeDNS]:
    """A DNS server on 127.0.0.1 with an empty zone (everything NXDOMAIN), stopped after the test."""
    server = FakeDNS().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own (tests/support/pgserver.py), running, which the
    test may crash; skipped (failed under MAILRELAY_TEST_REQUIRE_PG=1) where none can run."""
    reason = why_unusable()
    if reason is not None:
        if os.environ.get("MAILRELAY_TEST_REQUIRE_PG") == "1":
            pytest.fail(reason + " (MAILRELAY_TEST_REQUIRE_PG=1)")
        pytest.skip(reason)
    server = PrivatePostgres(free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()
