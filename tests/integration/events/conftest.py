"""A webhook receiver on loopback that records every POST (tests/support/httpsink.py) with
helpers for event batches, plus the delivery fixtures (node, remote MX servers, fake DNS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.delivery.conftest import mx_port, remote_mx  # noqa: F401 - fixtures
from tests.integration.smtp.conftest import ca, node_factory  # noqa: F401 - fixtures
from tests.support.httpsink import Post, Receiver, http_receiver


def post_events(post: Post) -> list[dict[str, Any]]:
    data = json.loads(post.body)
    assert isinstance(data, list)
    return data


class EventReceiver(Receiver):
    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted POST, in arrival order."""
        return [e for p in self.accepted() for e in post_events(p)]

    def wait(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events()
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver got {[(e['event'], e.get('email')) for e in self.events()]}")


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    with http_receiver("/hook?token=abc") as rcv:
        rcv.__class__ = EventReceiver  # the same recorder, with the event helpers
        assert isinstance(rcv, EventReceiver)
        yield rcv
