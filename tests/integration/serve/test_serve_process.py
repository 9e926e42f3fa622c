"""`mailrelay serve` as a real process: first start, durability under SIGKILL, graceful stop."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrelay.store import bodies
from mailrelay.store.db import create_engine
from tests.support.ports import free_port
from tests.support.serve import Server, base_env, run_cli, write_config

ENV_LISTENERS = ("SMTP", "SUBMISSION", "SUBMISSIONS", "ALT")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_first_start_writes_config_cert_and_demo_account(tmp_path: Path, servers: list[Server]) -> None:
    env = base_env(tmp_path)
    ports = {}
    for name in ENV_LISTENERS:
        ports[name] = free_port()
        env[f"MAILRELAY_LISTENER_{name}_LISTEN"] = f"127.0.0.1:{ports[name]}"
    server = Server(tmp_path, ["serve"], env)
    servers.append(server)
    server.wait_ready()
    out = server.text()
    assert (tmp_path / "mailrelay.toml").exists(), "a default config is written on first start"
    assert (tmp_path / "data" / "mailrelay.db").exists()
    assert (tmp_path / "data" / "tls" / "cert.pem").exists()
    assert oct((tmp_path / "data" / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
    password = next(line.split()[-1] for line in out.splitlines() if "password:" in line)
    # The environment overrides beat the written file: every listener is on our port.
    client = smtplib.SMTP_SSL("127.0.0.1", ports["SUBMISSIONS"], timeout=10,
                              context=__import__("ssl")._create_unverified_context())
    client.login("demo", password)
    assert client.sendmail("demo@example.net", ["x@example.com"], b"Subject: hi\r\n\r\nhi\r\n") == {}
    client.quit()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    # second start: no new demo account, no password printed
    again = Server(tmp_path, ["serve"], env)
    servers.append(again)
    again.wait_ready()
    assert "password:" not in again.text()


def test_kill_9_loses_no_accepted_message(tmp_path: Path, db_url: str, servers: list[Server]) -> None:
    port = free_port()
    config = write_config(tmp_path, db_url, port)
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    servers.append(server)
    server.wait_ready()
    queue_ids: list[str] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=20)
        client.ehlo()
        for i in range(n):
            client.mail("app@example.net")
            client.rcpt(f"user{i}@example.com")
            code, text = client.data(b"Subject: durable\r\n\r\n" + b"x" * 2000 + b"\r\n")
            assert code == 250, text
            with lock:
                queue_ids.append(text.decode().rsplit(" ", 1)[1])
        client.close()

    threads = [threading.Thread(target=sender, args=(10,)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(queue_ids) == 50
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    restarted = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    servers.append(restarted)
    restarted.wait_ready()
    result = run_cli(tmp_path, config, "queue", "list", "--limit", "1000", "--json")
    assert result.returncode == 0, result.stderr
    listed = {entry["id"] for entry in json.loads(result.stdout)}
    assert listed == set(queue_ids)
    table = run_cli(tmp_path, config, "queue", "list", "--limit", "1000")
    assert sum(1 for line in table.stdout.splitlines() if line.split()[:1] and line.split()[0] in listed) == 50
    engine = create_engine(db_url)  # every body whole: committed with its message, before the 250
    try:
        with engine.connect() as conn:
            content = bodies.load(conn, queue_ids)
    finally:
        engine.dispose()
    assert {c.body for c in content.values()} == {b"Subject: durable\r\n\r\n" + b"x" * 2000 + b"\r\n"}
    assert len(content) == 50


def test_sigterm_finishes_the_transaction_in_flight(tmp_path: Path, servers: list[Server]) -> None:
    port = free_port()
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", port)
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    servers.append(server)
    server.wait_ready()
    busy = smtplib.SMTP("127.0.0.1", port, timeout=20)
    idle = smtplib.SMTP("127.0.0.1", port, timeout=20)
    busy.ehlo()
    busy.mail("app@example.net")
    busy.rcpt("x@example.com")
    busy.putcmd("data")
    assert busy.getreply()[0] == 354
    busy.send(b"Subject: in flight\r\n\r\nhalf")
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None, "the server waits for the transaction in flight"
    try:  # idle sessions are told 421 and closed at once
        code = idle.noop()[0]
    except smtplib.SMTPServerDisconnected:
        code = 421
    assert code == 421
    busy.send(b" and the rest\r\n.\r\n")
    code, text = busy.getreply()
    assert code == 250, text
    assert server.proc.wait(20) == 0
    assert "stopped" in server.text()
    result = run_cli(tmp_path, config, "queue", "list", "--json")
    assert len(json.loads(result.stdout)) == 1


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[smtp]\nbogus = 1", "smtp.bogus"),
        ('[smtp]\nmax_recipients = "many"', "smtp.max_recipients"),
        ('[listener.smtp]\ntls = "sometimes"', "listener.smtp.tls"),
        ('[listener.alt]\nlisten = ["nowhere"]', "listener.alt.listen"),
        ('[tls]\ncert_file = "/nonexistent/cert.pem"\nkey_file = "/nonexistent/key.pem"', "tls.cert_file"),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", free_port(), extra)
    result = run_cli(tmp_path, config, "serve")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0] and str(config) in lines[0]


def test_environment_override_with_wrong_type_names_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", free_port())
    env = base_env(tmp_path) | {"MAILRELAY_SMTP_IDLE_TIMEOUT": "soon"}
    result = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), "serve", "--check"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "MAILRELAY_SMTP_IDLE_TIMEOUT" in result.stderr and "smtp.idle_timeout" in result.stderr
    assert "Traceback" not in result.stderr
