"""Status summaries and header extraction of the queue reader."""

from __future__ import annotations

import pytest

from mailrelay.spool.reader import header_section, summarize_statuses


@pytest.mark.parametrize(("statuses", "text"), [
    (["queued"], "queued"),
    (["queued", "queued", "queued"], "queued"),
    (["delivered", "queued", "queued"], "2 queued, 1 delivered"),
    (["bounced", "deferred", "delivered", "queued"], "1 queued, 1 deferred, 1 delivered, 1 bounced"),
    (["zeta", "queued", "alpha"], "1 queued, 1 alpha, 1 zeta"),
    ([], "empty"),
])
def test_summarize_statuses(statuses: list[str], text: str) -> None:
    assert summarize_statuses(statuses) == text


@pytest.mark.parametrize(("body", "headers"), [
    (b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n\r\nmore", b"Subject: hi\r\nFrom: a@b\r\n"),
    (b"Subject: hi\nFrom: a@b\n\nbody\n", b"Subject: hi\nFrom: a@b\n"),
    (b"Subject: only headers\r\n", b"Subject: only headers\r\n"),
    (b"\r\nbody without headers\r\n", b""),
    (b"", b""),
])
def test_header_section_stops_at_the_first_empty_line(body: bytes, headers: bytes) -> None:
    assert header_section(body) == headers
