"""POST /v3/mail/send with the SQLite database on a file system that fills up (issue 14): 503
with Retry-After while there is no room (below storage.min_free, as SMTP's 452 4.3.1, or a
commit the disk could not take), 202 only for what was stored, and 202 again once there is."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.http.conftest import APINode
from tests.integration.http.test_mail_send import mail
from tests.support.tmpfs import Filler, mounted_tmpfs

MiB = 2**20
MIN_FREE = 4 * MiB


@pytest.fixture(name="db_url")
def on_a_small_file_system(tmp_path: Path) -> Iterator[str]:
    with mounted_tmpfs(tmp_path / "fs", 32 * MiB) as path:
        yield f"sqlite:///{path / 'mailrelay.db'}"


def _filler(db_url: str) -> Filler:
    return Filler(Path(db_url.split("///", 1)[1]).parent)


class Poster:
    """Posts messages by subject; remembers which were answered 202."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.accepted: list[str] = []

    def post(self, subject: str, size: int = 0) -> httpx.Response:
        # Random text: bodies are stored compressed, and "x" * size would shrink to nothing.
        text = base64.b64encode(os.urandom(size)).decode()[:size]
        extra: dict[str, Any] = {"content": [{"type": "text/plain", "value": text}]} if size else {}
        r = self.http.post("/v3/mail/send", json=mail(subject=subject, **extra))
        assert r.status_code in (202, 503), r.text
        if r.status_code == 202:
            self.accepted.append(subject)
        else:
            assert r.headers["Retry-After"] == "5"
        return r

    def until(self, status: int, subject: str, timeout: float = 3.0) -> httpx.Response:
        """Post until answered `status` (free space is read at most once a second)."""
        deadline = time.monotonic() + timeout
        while (r := self.post(subject)).status_code != status:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        return r


def test_below_min_free_mail_send_is_503_with_retry_after(api_factory: Callable[..., APINode],
                                                          db_url: str) -> None:
    api = api_factory(f"[storage]\nmin_free = {MIN_FREE}\n")
    filler = _filler(db_url)
    with api.client(api.key()) as http:
        poster = Poster(http)
        assert poster.post("before").status_code == 202
        filler.leave(MIN_FREE // 2)
        low = poster.until(503, "low")
        # Above the line again, but not by the request's size: 503 for it, 202 for a small one.
        filler.leave(MIN_FREE + MiB)
        poster.until(202, "above")
        assert poster.post("too big for the room", size=2 * MiB).status_code == 503
        filler.remove()
        poster.until(202, "again")
    assert low.json()["errors"][0]["message"] == "Insufficient system storage"
    assert [m["subject"] for m in api.node.stored()] == poster.accepted
    assert poster.accepted[0] == "before" and poster.accepted[-2:] == ["above", "again"]


def test_a_commit_the_full_disk_cannot_take_is_503_not_500(api_factory: Callable[..., APINode], db_url: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    api = api_factory("[storage]\nmin_free = 0\n")  # nothing checked first: SQLite finds out
    filler = _filler(db_url)
    with api.client(api.key()) as http:
        poster = Poster(http)
        filler.leave(MiB)
        assert poster.post("full", size=3 * MiB).status_code == 503
        filler.remove()
        assert poster.post("again").status_code == 202
    assert [m["subject"] for m in api.node.stored()] == ["again"]
    # The writer's one line for the outage; no 500 with a traceback per request.
    assert caplog.text.count("database unavailable") == 1, caplog.text
    assert "/v3/mail/send failed" not in caplog.text and "Traceback" not in caplog.text, caplog.text
