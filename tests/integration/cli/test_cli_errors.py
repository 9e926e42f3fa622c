"""Bad input and failures: one line on stderr, exit 2 for mistakes, 1 for failures, 130 on ^C."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailrelay.cli.main import main

from .conftest import clean_env, run_cli


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailrelay.toml"
    path.write_text(text)
    return path


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    return _config(tmp_path, f'[storage]\nurl = "sqlite:///{tmp_path / "db.sqlite"}"\n')


@pytest.mark.parametrize(("toml", "key", "expected"), [
    ("[smtp]\nbogus = 1\n", "smtp.bogus", "unknown key"),
    ('[smtp]\nmax_recipients = "x"\n', "smtp.max_recipients", "expected an integer"),
])
def test_config_mistakes_name_file_and_key(tmp_path: Path, toml: str, key: str,
                                           expected: str) -> None:
    config = _config(tmp_path, toml)
    r = run_cli("-c", str(config), "account", "list", cwd=tmp_path)
    assert r.code == 2
    assert r.error_line.startswith(f"mailrelay: error: {config}: {key}: {expected}")


@pytest.mark.parametrize(("toml", "key", "expected"), [
    ("[nonsense]\n", "nonsense", "unknown section"),
    ("[smtp\n", "(file)", "not valid TOML"),
    ('[storage]\nurl = "postgresql://u@h:notaport/db"\n', "storage.url", "not a usable database URL"),
    ('[storage]\nurl = "foo://bar"\n', "storage.url", "only sqlite and postgresql are supported"),
    ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients", "expected at least 1"),
])
def test_more_config_mistakes_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, toml: str, key: str,
                                         expected: str) -> None:
    monkeypatch.delenv("MAILRELAY_SMTP_MAX_RECIPIENTS", raising=False)
    config = _config(tmp_path, toml)
    assert main(["-c", str(config), "queue", "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"mailrelay: error: {config}: {key}: {expected}" + err.split(expected, 1)[1]
    assert err.count("\n") == 1


def test_named_config_must_exist(tmp_path: Path) -> None:
    r = run_cli("-c", "missing.toml", "queue", "list", cwd=tmp_path)
    assert r.code == 2 and "missing.toml: (file): file not found" in r.error_line
    env = {**clean_env(), "MAILRELAY_CONFIG": str(tmp_path / "also-missing.toml")}
    r = run_cli("queue", "list", cwd=tmp_path, env=env)
    assert r.code == 2 and "also-missing.toml: (file): file not found" in r.error_line


def test_missing_default_config_uses_builtin_defaults(tmp_path: Path) -> None:
    r = run_cli("queue", "list", cwd=tmp_path)
    assert (r.code, r.out, r.err) == (0, "queue is empty\n", "")
    assert (tmp_path / "data" / "mailrelay.db").is_file()  # defaults: SQLite in ./data


def test_unreachable_database_is_a_runtime_failure(tmp_path: Path) -> None:
    config = _config(tmp_path, '[storage]\nurl = "postgresql://postgres@127.0.0.1:1/test"\n')
    r = run_cli("-c", str(config), "account", "list", cwd=tmp_path)
    assert r.code == 1
    assert r.error_line.startswith("mailrelay: error: cannot connect to postgresql at "
                                   "127.0.0.1:1: ")
    assert r.error_line.endswith("check storage.url")


@pytest.mark.parametrize(("args", "message"), [
    (("account", "create", "bad name"), "invalid account name 'bad name'"),
    (("account", "create", "apikey"), "reserved for API key logins"),
    (("account", "create", "carol", "--plan", "gold"), "unknown plan 'gold'"),
    (("account", "frobnicate"), "invalid choice: 'frobnicate'"),
    (("queue", "list", "--limit", "0"), "expected at least 1"),
    (("queue", "list", "--limit", "1" + "0" * 30), "expected at most 2147483647"),
    (("events", "--limit", "1" + "0" * 30), "expected at most 2147483647"),
    (("inbox", "list", "--limit", "1" + "0" * 30), "expected at most 2147483647"),
    (("queue",), "the following arguments are required: COMMAND"),
])
def test_usage_mistakes_exit_2_with_one_line(sqlite_config: Path, args: tuple[str, ...],
                                             message: str, capsys: pytest.CaptureFixture[str],
                                             ) -> None:
    assert main(["-c", str(sqlite_config), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mailrelay: error: ") and captured.err.count("\n") == 1
    assert message in captured.err


def test_usage_mistake_in_a_subprocess_is_one_line_too(sqlite_config: Path) -> None:
    r = run_cli("-c", str(sqlite_config), "account", "create", "bad name",
                cwd=sqlite_config.parent)
    assert r.code == 2 and "invalid account name 'bad name'" in r.error_line
    assert r.out == ""


def _start_on_a_tty(sqlite_config: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run the CLI with a pseudo-terminal on stdin and no controlling terminal.

    Without a controlling terminal getpass falls back to stdin (the pty) for the password and
    writes its prompt to stderr; `start_new_session` keeps it off the developer's own terminal.
    """
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailrelay", "-c", str(sqlite_config), *args],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
        cwd=sqlite_config.parent, start_new_session=True)
    os.close(slave)
    return proc, master


def _wait_for(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 20.0) -> bytes:
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 1024)
            assert chunk, seen  # the process ended before prompting
            seen += chunk
    return seen


def test_tty_prompts_twice_and_refuses_a_mismatch(sqlite_config: Path) -> None:
    proc, master = _start_on_a_tty(sqlite_config, "account", "create", "alice")
    try:
        _wait_for(proc, b"Password: ")
        os.write(master, b"first-password\n")
        _wait_for(proc, b"Repeat password: ")
        os.write(master, b"other-password\n")
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(master)
    assert proc.returncode == 2
    assert b"mailrelay: error: passwords do not match; nothing changed" in err
    assert b"Traceback" not in err and out == b""


def test_interrupt_at_the_prompt_exits_130_quietly(sqlite_config: Path) -> None:
    proc, master = _start_on_a_tty(sqlite_config, "account", "create", "alice")
    try:
        _wait_for(proc, b"Password: ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        os.close(master)
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"error" not in err
