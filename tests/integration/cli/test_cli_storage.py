"""storage.url mistakes and an unreachable database: one line, exit 2, no password shown
(item F of issue 10)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.blackhole import Blackhole

from .conftest import run_cli

PASSWORD = "s3cret-pw"


def _config(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "mailrelay.toml"
    path.write_text(f"[server]\ndata_dir = \"data\"\n[storage]\n{storage}\n")
    return path


def test_database_that_accepts_and_never_answers_times_out_with_one_line(tmp_path: Path) -> None:
    with Blackhole() as hole:
        config = _config(tmp_path, f'url = "postgresql://app:{PASSWORD}@127.0.0.1:{hole.port}/mail"\n'
                                   "connect_timeout = 2")
        started = time.monotonic()
        r = run_cli("-c", str(config), "account", "list", cwd=tmp_path)
        elapsed = time.monotonic() - started
        assert hole.accepted, "the client did reach the port"
    assert r.code == 2
    assert r.error_line == (
        f"mailrelay: error: {config}: storage.url: cannot reach the database at "
        f"127.0.0.1:{hole.port} within 2 s: connection timeout expired; check that PostgreSQL "
        "is running and the URL")
    assert PASSWORD not in r.err
    assert 2 <= elapsed < 10, elapsed


@pytest.mark.parametrize("url", [f"mysql://app:{PASSWORD}@127.0.0.1/mail", "mssql://db/mail"])
def test_unsupported_database_url_is_a_config_mistake(tmp_path: Path, url: str) -> None:
    config = _config(tmp_path, f'url = "{url}"')
    r = run_cli("-c", str(config), "queue", "list", cwd=tmp_path)
    assert r.code == 2
    assert r.error_line.startswith(
        f"mailrelay: error: {config}: storage.url: only sqlite and postgresql are supported "
        "(sqlite:///path or postgresql://user@host/db)")
    assert PASSWORD not in r.err
    assert not (tmp_path / "data").exists()


def test_unusable_url_message_hides_the_password(tmp_path: Path) -> None:
    config = _config(tmp_path, f'url = "postgresql://app:{PASSWORD}@127.0.0.1:notaport/mail"')
    r = run_cli("-c", str(config), "queue", "list", cwd=tmp_path)
    assert r.code == 2
    assert "storage.url: not a usable database URL" in r.error_line
    assert PASSWORD not in r.err
