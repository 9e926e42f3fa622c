"""`mailrelay serve` runs the HTTP API in a process of its own: it answers, it wakes delivery,
it stops with the server, and it does not outlive a killed parent."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.integration.serve.test_serve_process import Server, base_env, free_port, run_cli, servers, write_config

__all__ = ["servers"]  # the fixture

MAIL = {"personalizations": [{"to": [{"email": "bob@example.net"}]}], "from": {"email": "demo@example.com"},
        "subject": "Hi", "content": [{"type": "text/plain", "value": "Hello"}]}


def _start(tmp_path: Path, db_url: str, servers: list[Server], extra: str = "",
           smtp_port: int | None = None) -> tuple[Server, str, str, int]:
    http_port = free_port()
    config = write_config(tmp_path, db_url, smtp_port or free_port(),
                          f'[http]\nenabled = true\nlisten = "127.0.0.1:{http_port}"\n' + extra)
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    servers.append(server)
    server.wait_ready()  # it made the demo account
    key = run_cli(tmp_path, config, "account", "key", "create", "demo").stdout
    full = re.search(r"key: (\S+)", key)
    assert full, key
    deadline = time.monotonic() + 30
    while "HTTP API listening" not in server.text():
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.05)
    child = int(re.findall(r"HTTP API process started \(pid (\d+)\)", server.text())[0])
    return server, f"http://127.0.0.1:{http_port}", full.group(1), child


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as fh:  # a zombie awaiting its parent's wait is gone too
            if fh.read().split(") ", 1)[1].startswith("Z"):
                return True
        time.sleep(0.05)
    return False


def test_the_api_answers_from_its_own_process_and_stops_with_sigterm(
        tmp_path: Path, db_url: str, servers: list[Server]) -> None:
    server, url, key, child = _start(tmp_path, db_url, servers)
    assert child != server.proc.pid
    # /readyz of the child: the parent bound its SMTP listeners before starting it, and said so.
    ready = httpx.get(f"{url}/readyz", trust_env=False)
    assert ready.status_code == 200 and ready.json()["checks"]["listeners"] == "ok", ready.text
    r = httpx.post(f"{url}/v3/mail/send", json=MAIL, headers={"Authorization": f"Bearer {key}"}, trust_env=False)
    assert r.status_code == 202, r.text
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert _gone(child, 10)
    assert "queued from=<demo@example.com>" in server.text()


def test_the_api_process_stops_when_its_parent_is_killed(
        tmp_path: Path, db_url: str, servers: list[Server]) -> None:
    server, _, _, child = _start(tmp_path, db_url, servers)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert _gone(child, 15), "the HTTP process outlived its parent"


def test_failed_keys_on_every_api_process_lock_the_address_out_of_all_of_them_and_of_smtp(
        tmp_path: Path, db_url: str, servers: list[Server]) -> None:
    # Two API processes (the kernel spreads connections over them) and the SMTP process: four
    # failures in all lock the address everywhere, though no process saw four itself.
    smtp_port = free_port()
    extra = "processes = 2\n[auth]\nslowdown_after = 4\nlockout_after = 4\nlockout_seconds = 120\n"
    server, url, key, _ = _start(tmp_path, db_url, servers, extra, smtp_port)
    assert len(re.findall(r"HTTP API process started", server.text())) == 2
    for _ in range(4):  # a new connection each, as SendGrid's client makes
        r = httpx.post(f"{url}/v3/mail/send", json=MAIL, headers={"Authorization": "Bearer SG.nope.nope"},
                       trust_env=False)
        assert r.status_code == 401
    deadline = time.monotonic() + 5  # other processes read the shared locks once a second
    while True:
        answers = [httpx.post(f"{url}/v3/mail/send", json=MAIL, headers={"Authorization": f"Bearer {key}"},
                              trust_env=False).status_code for _ in range(8)]
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=5) as s:
            greeting = s.recv(512)
        if answers == [429] * 8 and greeting.startswith(b"421"):
            break
        assert time.monotonic() < deadline, (answers, greeting)
        time.sleep(0.2)
    assert "nope.nope" not in server.text()  # keys never in the log
