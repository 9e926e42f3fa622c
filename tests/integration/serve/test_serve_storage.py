"""`mailrelay serve` against a database it cannot use: it says so at once, in one line, and
exits 2 (item F of issue 10)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.integration.serve.test_serve_process import base_env, free_port, write_config
from tests.support.blackhole import Blackhole

PASSWORD = "s3cret-pw"


def _serve(tmp_path: Path, config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), "serve"],
                          cwd=tmp_path, env=base_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    return proc, time.monotonic() - started


def test_serve_against_a_silent_database_logs_then_exits_2_with_one_line(tmp_path: Path) -> None:
    with Blackhole() as hole:
        url = f"postgresql://app:{PASSWORD}@127.0.0.1:{hole.port}/mail"
        config = write_config(tmp_path, url, free_port(), "[storage]\nconnect_timeout = 2\n")
        proc, elapsed = _serve(tmp_path, config)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # The log says what it waits for, before waiting (a TLS certificate line may come first).
    assert f"INFO    mailrelay: connecting to the database at 127.0.0.1:{hole.port} (timeout 2 s) ..." \
        in lines[-2]
    assert lines[-1] == (
        f"mailrelay: error: {config}: storage.url: cannot reach the database at "
        f"127.0.0.1:{hole.port} within 2 s: connection timeout expired; check that PostgreSQL "
        "is running and the URL")
    assert sum("error" in line for line in lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    # Bounded by the 2 s timeout, not the 131 s the driver waited before; the rest is the
    # interpreter's start, which takes several seconds on a loaded 2-core machine.
    assert 2 <= elapsed < 30, elapsed


def test_serve_with_a_mysql_url_exits_2_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"mysql://app:{PASSWORD}@127.0.0.1/mail", free_port())
    proc, _ = _serve(tmp_path, config)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mailrelay: error: {config}: storage.url: only sqlite and postgresql are supported "
        f"(sqlite:///path or postgresql://user@host/db), got 'mysql://app:***@127.0.0.1/mail'"]
