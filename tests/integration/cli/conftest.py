"""Run `python -m mailrelay` in a subprocess against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The single stderr line of a failed command (asserting there is exactly one)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        assert lines[0].startswith("mailrelay: error: "), lines[0]
        return lines[0]


def clean_env() -> dict[str, str]:
    """The environment without MAILRELAY_* variables, which would override the config file."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILRELAY_")}


def run_cli(*args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run([sys.executable, "-m", "mailrelay", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env=clean_env() if env is None else env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


class CLI:
    """`mailrelay -c <config> ...` with [storage] url pointing at the test database."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def __call__(self, *args: str, stdin: str = "") -> Result:
        return run_cli("-c", str(self.config), *args, cwd=self.config.parent, stdin=stdin)


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> CLI:
    config = tmp_path / "mailrelay.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n')
    return CLI(config)


class InProcess:
    """`main(["-c", config, ...])` in this process: the same code path, without the ~0.4 s
    interpreter start, for tables of error cases."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *args: str) -> Result:
        from mailrelay.cli.main import main

        self.capsys.readouterr()
        code = main(["-c", str(self.config), *args])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)


@pytest.fixture
def inproc(cli: CLI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
           ) -> InProcess:
    for name in list(os.environ):
        if name.startswith("MAILRELAY_"):
            monkeypatch.delenv(name)
    return InProcess(cli.config, capsys)
