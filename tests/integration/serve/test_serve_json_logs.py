"""`[server] log_format = "json"`: a real `mailrelay serve` (SMTP process, a delivery worker and
the HTTP API process) writes only JSON lines, with the queue id and account as fields, and never
a secret."""

from __future__ import annotations

import base64
import json
import re
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.serve.test_serve_process import Server, base_env, free_port, run_cli, servers, write_config

__all__ = ["servers"]  # the fixture

PASSWORD = "Correct-Horse-7f3a9c1e"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _lines(server: Server) -> list[dict[str, Any]]:
    out = []
    for line in server.text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{server.text()}") from None
    return out


def _wait_for(server: Server, found: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _lines(server)
        if found(lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"not found in time:\n{server.text()}")


def _submit(port: int, user: str, password: str, rcpt: str) -> str:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.starttls(context=ssl._create_unverified_context())
    client.login(user, password)
    client.mail("app@example.net")
    client.rcpt(rcpt)
    code, text = client.data(b"Subject: json logs\r\n\r\nhello\r\n")
    client.quit()
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def test_json_lines_carry_queue_id_and_account_and_no_secret(tmp_path: Path, servers: list[Server]) -> None:
    submission, http, closed_mx = free_port(), free_port(), free_port()  # nothing listens on closed_mx
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", free_port(), f"""
[server]
log_format = "json"
[listener.submission]
enabled = true
listen = ["127.0.0.1:{submission}"]
[delivery]
enabled = true
processes = 1
allow_private_destinations = true
connect_timeout = 2
[http]
enabled = true
listen = "127.0.0.1:{http}"
[delivery.routes."example.com"]
host = "127.0.0.1"
port = {closed_mx}
tls = "none"
""")
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    servers.append(server)
    server.wait_ready()  # with no account yet: the demo account is made, its password not shown
    demo = next(ln for ln in _lines(server) if "demo account" in ln["message"])
    assert demo["level"] == "warning" and "mailrelay account passwd demo" in demo["message"], demo
    created = subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), "account", "create", "carol",
                              "--password-stdin"], input=PASSWORD + "\n", cwd=tmp_path, env=base_env(tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    made = run_cli(tmp_path, config, "account", "key", "create", "carol")
    key = re.search(r"key: (\S+)", made.stdout)
    assert key, made.stdout + made.stderr
    secret = key.group(1).rsplit(".", 1)[1]

    by_password = _submit(submission, "carol", PASSWORD, "one@example.com")
    by_key = _submit(submission, "apikey", key.group(1), "two@example.com")
    bad = smtplib.SMTP("127.0.0.1", submission, timeout=10)
    bad.starttls(context=ssl._create_unverified_context())
    bad.ehlo()
    for user, password in (("carol", PASSWORD + "-wrong"), (key.group(1), "x")):  # one attempt each
        plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        assert bad.docmd("AUTH", f"PLAIN {plain}")[0] == 535
    bad.close()
    _wait_for(server, lambda lines: any("HTTP API listening" in ln["message"] for ln in lines))
    mail = {"personalizations": [{"to": [{"email": "three@example.com"}]}], "from": {"email": "app@example.net"},
            "subject": "json logs", "content": [{"type": "text/plain", "value": "hello"}]}
    sent = httpx.post(f"http://127.0.0.1:{http}/v3/mail/send", json=mail, trust_env=False, timeout=10,
                      headers={"Authorization": f"Bearer {key.group(1)}"})
    assert sent.status_code == 202, sent.text
    refused = httpx.post(f"http://127.0.0.1:{http}/v3/mail/send", json=mail, trust_env=False, timeout=10,
                         headers={"Authorization": f"Bearer {key.group(1)[:-4]}xxxx"})
    assert refused.status_code == 401, refused.text

    def finished(lines: list[dict[str, Any]]) -> bool:
        done = {ln.get("queue_id") for ln in lines if ln.get("event") in ("delivered", "deferred", "bounced")}
        by_http = [ln for ln in lines if ln.get("event") == "queued" and ln.get("via") == "http"]
        return ({by_password, by_key} <= done and bool(by_http) and by_http[0]["queue_id"] in done
                and sum(ln.get("event") == "auth_failed" for ln in lines) == 2)

    lines = _wait_for(server, finished)
    text = server.text()
    for secret_text in (PASSWORD, key.group(1), secret):
        assert secret_text not in text, f"a secret in the log: {secret_text!r}"
    assert "password:" not in text.lower()
    for line in lines:
        assert RFC3339_MS.match(line["time"]), line
        assert {"level", "logger", "message", "pid"} <= set(line), line
    http_pids = {ln["pid"] for ln in lines if "HTTP API listening" in ln["message"]}  # one or more processes
    by_http = next(ln for ln in lines if ln.get("event") == "queued" and ln.get("via") == "http")
    assert by_http["pid"] in http_pids and by_http["account"] == "carol", by_http
    for queue_id in (by_password, by_key, by_http["queue_id"]):
        queued = [ln for ln in lines if ln.get("event") == "queued" and ln.get("queue_id") == queue_id]
        assert len(queued) == 1, lines
        assert queued[0]["account"] == "carol" and queued[0]["client_ip"] == "127.0.0.1"
        # The text stays the message, as in the text format.
        assert queued[0]["message"].startswith(f"{queue_id}: queued from=<app@example.net> nrcpt=1 ")
        outcome = next(ln for ln in lines if ln.get("queue_id") == queue_id and ln.get("event") == "deferred")
        assert outcome["account"] == "carol" and outcome["relay"] == "127.0.0.1"
        assert outcome["recipient"].endswith("@example.com") and outcome["status"].startswith("4.")
        assert outcome["pid"] != queued[0]["pid"], "the outcome comes from the delivery worker process"
    failed = [ln for ln in lines if ln.get("event") == "auth_failed"]
    assert [ln["user"] for ln in failed] == ["carol", "(an API key, not logged)"], failed
    assert failed[0]["client_ip"] == "127.0.0.1"
    assert {ln.get("user") for ln in lines if ln.get("event") == "auth_ok"} == {"carol", "apikey"}


def test_an_unknown_log_format_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", free_port(), '[server]\nlog_format = "xml"')
    result = run_cli(tmp_path, config, "serve")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.log_format" in lines[0] and str(config) in lines[0] and '"json"' in lines[0]
