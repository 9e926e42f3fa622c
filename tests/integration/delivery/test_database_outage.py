"""The database goes away under a serving node and comes back, end to end.

A real `mailrelay serve` on PostgreSQL through a proxy the test cuts (the shared server stays up
for the other tests), with a delivery worker, an HTTP API process and mail flowing to a loopback
MX that holds its answers until the cut (transactions in flight when it comes). While the
database is away: SMTP refuses each message with 451 4.3.0 (AUTH 454) and keeps the session, the
API answers 503 with Retry-After in SendGrid's error shape on every route that needs the
database (the dashboard too), /readyz 503, /livez 200, and no process spins. When it is back:
mail is taken again within seconds, everything accepted is delivered exactly once, and each
process logged the outage in a few lines however many messages it refused.
"""

from __future__ import annotations

import base64
import calendar
import collections
import contextlib
import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa

from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.accounts.websessions import WebSessions
from mailrelay.store.db import create_engine
from tests.integration.delivery.conftest import Behaviour, RemoteMX
from tests.integration.serve.test_serve_process import Server, base_env, free_port, write_config
from tests.support.dnsserver import FakeDNS
from tests.support.tcpproxy import TCPProxy

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

OUTAGE = 4.0  # seconds the road to the database is cut
RECOVERY = 5.0  # seconds after its return by which SMTP and the API take mail again
MAX_CPU = 0.3  # share of one core a process may use while the database is away
# warnings and errors a process may log from the cut to its return, whatever it refused: the
# database going (and, in a delivery process, its LISTEN connection going: one line of its own)
MAX_LINES = 3
TICK = os.sysconf("SC_CLK_TCK")
MAIL = {"from": {"email": "app@example.net"}, "subject": "api", "content": [{"type": "text/plain", "value": "hi"}]}
# Routes of the API and the dashboard that read the database before they answer.
NEEDS_DATABASE = ("/v3/suppression/bounces", "/v3/stats?start_date=2024-01-01", "/v3/api_keys",
                  "/v3/messages?limit=5", "/activity", "/suppressions", "/keys")


def _cpu(pid: int) -> float:
    """Seconds of CPU the process (all its threads) has used."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _queue_id(data: bytes) -> str:
    m = re.search(rb"with E?SMTP\w* id (\w+)|with HTTPS? id (\w+)", data)
    assert m is not None, data[:300]
    return (m.group(1) or m.group(2)).decode()


def _send_one(client: smtplib.SMTP, i: int) -> tuple[int, bytes]:
    """One transaction on an open session: the reply that ended it (MAIL, RCPT or DATA's)."""
    for code, text in (client.mail("app@example.net"), client.rcpt(f"user{i}@dest.test")):
        if code != 250:
            client.rset()
            return code, text
    return client.data(f"From: app@example.net\r\nSubject: n{i}\r\n\r\nbody {i}\r\n".encode())


def _api_send(http: httpx.Client, i: int) -> httpx.Response:
    return http.post("/v3/mail/send", json={**MAIL, "personalizations": [{"to": [{"email": f"api{i}@dest.test"}]}]})


def _log(server: Server) -> list[dict[str, Any]]:
    lines = server.text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line (a raw traceback?): {line!r}") from None
    return records


def _wall(record: dict[str, Any]) -> float:
    stamp, millis = record["time"].rstrip("Z").split(".")
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def test_a_database_outage_refuses_for_its_length_and_recovers_by_itself(
        tmp_path: Path, db_url: str, fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    mx = remote_mx("127.0.0.2", Behaviour())
    mx.handler.behaviour.open.clear()  # the MX holds its replies until the database is gone
    parts = urlsplit(db_url)
    proxy = TCPProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    smtp_port, http_port = free_port(), free_port()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    config = write_config(tmp_path, via_proxy, smtp_port, f"""
[server]
log_format = "json"
[http]
enabled = true
listen = "127.0.0.1:{http_port}"
processes = 1
[dns]
nameservers = ["{fake_dns.address}"]
[delivery]
enabled = true
processes = 1
mx_port = {mx_port}
allow_private_destinations = true
max_connections = 4
max_per_domain = 4
retry_first = 0.5
retry_max = 1
""")
    engine = create_engine(db_url)  # straight to the database, not through the proxy
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    try:
        server.wait_ready()
        deadline = time.monotonic() + 30
        while "HTTP API listening" not in server.text():
            assert time.monotonic() < deadline, server.text()
            time.sleep(0.05)
        text = server.text()
        worker = int(re.findall(r"delivery worker 0 started \(pid (\d+)\)", text)[0])
        api_pid = int(re.findall(r"HTTP API process started \(pid (\d+)\)", text)[0])
        pids = {"smtp": server.proc.pid, "delivery": worker, "http": api_pid}
        accounts = AccountService(engine, make_hasher())
        _, key = accounts.create_key("demo")
        demo = accounts.get("demo")
        assert demo is not None
        cookie, _ = WebSessions(engine).create(demo.id, time.time())
        api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10, trust_env=False,
                           headers={"Authorization": f"Bearer {key}"}, cookies={"mr_session": cookie})
        with api:
            # Mail flowing: accepted over SMTP and the API, four transactions at the MX when the cut comes.
            client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
            client.ehlo()
            accepted: list[str] = []
            for i in range(6):
                code, reply = _send_one(client, i)
                assert code == 250, reply
                accepted.append(reply.decode().rsplit(" ", 1)[1])
            for i in range(2):
                r = _api_send(api, i)
                assert r.status_code == 202, r.text
            api_accepted = 2
            for path in NEEDS_DATABASE:
                r = api.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            deadline = time.monotonic() + 10
            while mx.handler.in_data < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert mx.handler.in_data == 4, "deliveries must be in flight when the database goes"

            cpu_before = {name: _cpu(pid) for name, pid in pids.items()}
            cut_at, cut_wall = time.monotonic(), time.time()
            proxy.cut()
            # The open session: every message is refused with 451 4.3.0, the session goes on.
            refused = 0
            i = 100
            while time.monotonic() - cut_at < 1.5:
                code, reply = _send_one(client, i)
                assert (code, reply[:5]) == (451, b"4.3.0"), (code, reply)
                refused += 1
                i += 1
                time.sleep(0.05)  # a client trying again soon, not hammering (a RSET is a junk command)
            assert client.noop()[0] == 250
            mx.handler.behaviour.open.set()  # delivered while the database is away: outcomes held
            # A new session: greeted; AUTH is a temporary failure (not a wrong password); mail
            # is refused the same way.
            fresh = smtplib.SMTP("127.0.0.1", smtp_port, timeout=10)
            fresh.starttls(context=ssl._create_unverified_context())
            assert fresh.ehlo()[0] == 250
            plain = base64.b64encode(b"\0demo\0a password").decode()
            assert fresh.docmd("AUTH", f"PLAIN {plain}") == (454, b"4.7.0 Temporary authentication failure")
            code, reply = _send_one(fresh, i)
            assert (code, reply[:5]) == (451, b"4.3.0"), (code, reply)
            assert fresh.quit()[0] == 221
            # The API: 503 with Retry-After in SendGrid's error shape, at once, on every route.
            started = time.monotonic()
            r = _api_send(api, 100)
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            errors = r.json()["errors"]
            assert errors and set(errors[0]) == {"message", "field", "help"} and errors[0]["message"]
            for path in NEEDS_DATABASE:
                r = api.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text[:300])
                assert int(r.headers["Retry-After"]) > 0, path
            assert api.get("/readyz").status_code == 503
            assert api.get("/livez").status_code == 200
            assert time.monotonic() - started < 5, "a request waited on the missing database"
            while time.monotonic() - cut_at < OUTAGE:  # more refusals: the log must not grow with them
                code, reply = _send_one(client, i)
                assert code == 451, reply
                refused += 1
                i += 1
                assert _api_send(api, i).status_code == 503
                time.sleep(0.05)
            cpu = {name: (_cpu(pid) - cpu_before[name]) / (time.monotonic() - cut_at) for name, pid in pids.items()}
            back_wall = time.time()
            proxy.restore()
            back_at = time.monotonic()

            # Back: SMTP and the API take mail again within seconds, by themselves.
            while True:
                code, reply = _send_one(client, i)
                i += 1
                if code == 250:
                    accepted.append(reply.decode().rsplit(" ", 1)[1])
                    break
                assert time.monotonic() - back_at < RECOVERY, f"SMTP still refuses: {code} {reply!r}"
                time.sleep(0.1)
            smtp_back = time.monotonic() - back_at
            while True:
                r = _api_send(api, i)
                i += 1
                if r.status_code == 202:
                    api_accepted += 1
                    break
                assert r.status_code == 503, r.text
                assert time.monotonic() - back_at < RECOVERY, "the API still answers 503"
                time.sleep(0.1)
            api_back = time.monotonic() - back_at
            for path in NEEDS_DATABASE:
                assert api.get(path).status_code == 200, path
            code, reply = _send_one(client, i)
            assert code == 250, reply
            accepted.append(reply.decode().rsplit(" ", 1)[1])
            client.quit()

        # Everything accepted is delivered, once, and recorded so; nothing refused is sent.
        total = len(accepted) + api_accepted
        by_status = sa.text("SELECT status, COUNT(*) FROM recipients GROUP BY status")
        deadline = time.monotonic() + 15
        while True:
            with engine.connect() as conn:
                states = {status: int(n) for status, n in conn.execute(by_status)}
            if states.get("delivered") == total or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        recorded = time.monotonic() - back_at
        time.sleep(0.5)  # anything that would come twice comes now
        counts = collections.Counter(_queue_id(m.data) for m in list(mx.messages))
        assert set(accepted) <= set(counts) and len(counts) == total, counts
        assert all(n == 1 for n in counts.values()), f"delivered twice: {counts}"
        assert states == {"delivered": total}, states
        print(f"\nrefused {refused} messages over SMTP during {OUTAGE:g} s; back after: SMTP {smtp_back:.2f} s, "
              f"API {api_back:.2f} s, every outcome recorded {recorded:.2f} s; CPU while away "
              + ", ".join(f"{name} {share:.0%}" for name, share in cpu.items()))
        assert recorded < RECOVERY, f"delivery resumed {recorded:.1f} s after the database came back"
        for name, share in cpu.items():
            assert share < MAX_CPU, f"the {name} process used {share:.0%} of a core while the database was away"
    finally:
        proxy.restore()
        mx.handler.behaviour.open.set()
        if server.proc.poll() is None:  # while the proxy leads to the database
            server.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(30)
        server.stop()
        proxy.close()
        engine.dispose()

    # The log: JSON lines only (no raw traceback), none with a traceback, and a few lines per
    # process for the whole outage however many messages were refused meanwhile.
    records = _log(server)
    assert not [r for r in records if "exc" in r], [r for r in records if "exc" in r][:3]
    during = [r for r in records if cut_wall - 0.05 <= _wall(r) <= back_wall]
    outage = "\n".join(f"{name}: {r['level']} {r['logger']}: {r['message']}" for name, pid in pids.items()
                       for r in during if r["pid"] == pid)
    print(f"log lines during the outage:\n{outage}")
    # Besides the lines of each message delivered meanwhile (queue id and all), only the changes.
    assert all("queue_id" in r for r in during if r["level"] in ("debug", "info")), outage
    for name, pid in pids.items():
        alarms = [r for r in during if r["pid"] == pid and r["level"] not in ("debug", "info")]
        assert len(alarms) <= MAX_LINES, f"{name} logged {len(alarms)} warnings:\n{outage}"
        messages = [r["message"] for r in records if r["pid"] == pid]
        assert sum("database unavailable" in m for m in messages) == 1, (name, outage)
        assert sum("database back" in m for m in messages) == 1, (name, "\n".join(messages[-30:]))
    assert {r["pid"] for r in during} <= set(pids.values()), "a process not known to the test logged"
