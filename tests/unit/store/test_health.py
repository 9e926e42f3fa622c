"""StorageHealth: one line when the database goes, one when it is back, whoever reports it, and
the work paused meanwhile told once that it may resume."""

from __future__ import annotations

import logging
import threading

import pytest

from mailrelay.store.health import StorageHealth, StorageUnavailable


def test_one_line_per_change_however_many_failures_and_from_however_many_threads(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mailrelay.store")
    health = StorageHealth()
    back: list[bool] = []
    health.on_back.append(lambda: back.append(health.down))
    go = threading.Event()

    def report() -> None:
        go.wait()
        for _ in range(500):
            health.failed(StorageUnavailable("connection refused"), messages=1)

    threads = [threading.Thread(target=report) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    assert health.down and not back
    health.succeeded()
    health.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unavailable: StorageUnavailable: connection refused")
    assert "4000 messages refused and 4000 database calls failed meanwhile" in lines[1]
    assert back == [False]  # called once, after the state changed
