"""`/metrics` of a real `mailrelay serve`: the counters are the node's, summed over its processes.

Mail goes in through the SMTP process and through the API process, is delivered by two delivery
worker processes to a loopback MX (one recipient refused: bounced, and its DSN delivered), and
is scraped from the API process: the counts must be exactly what was sent and what the MX
received, and the queue gauges what the database says.
SQLite only: what is counted does not depend on the database, and the gauges' queries are
checked on both in tests/integration/http/test_metrics.py (a node start is the cost here).
"""

from __future__ import annotations

import re
import signal
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.delivery.conftest import Behaviour, RemoteMX
from tests.integration.serve.test_serve_process import Server, base_env, free_port, run_cli, write_config
from tests.support.dnsserver import FakeDNS

N_SMTP = 12
N_API = 5


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over the label values not given (e.g. every plan)."""
    return sum(v for (n, got), v in samples.items() if n == name and set(labels.items()) <= got)


def _start(tmp_path: Path, extra: str) -> tuple[Server, Path, int, str, str]:
    db_url = f"sqlite:///{tmp_path / 'mailrelay.db'}"
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, db_url, smtp_port, f'[http]\nenabled = true\nlisten = "127.0.0.1:{http_port}"\n'
                                                       'processes = 1\n' + extra)
    server = Server(tmp_path, ["-c", str(config), "serve"], base_env(tmp_path))
    server.wait_ready()
    deadline = time.monotonic() + 30
    while "HTTP API listening" not in server.text():
        assert time.monotonic() < deadline, server.text()
        time.sleep(0.05)
    return server, config, smtp_port, f"http://127.0.0.1:{http_port}", db_url


def test_metrics_count_what_was_sent_and_delivered_across_processes(
        tmp_path: Path, fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2", Behaviour(reject={"gone@dest.test"}))
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    server, config, smtp_port, url, db_url = _start(tmp_path, f"""[dns]
nameservers = ["{fake_dns.address}"]
[delivery]
enabled = true
processes = 2
mx_port = {mx_port}
allow_private_destinations = true
""")
    try:
        created = run_cli(tmp_path, config, "account", "key", "create", "demo").stdout
        key = re.search(r"key: (\S+)", created)
        assert key, created
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:  # demo, by trusted network
            for i in range(N_SMTP):
                client.sendmail("app@example.net", [f"s{i}@dest.test"], f"Subject: s{i}\r\n\r\nbody\r\n")
            # One the MX refuses (550): bounced; its DSN goes back to the sender, at the same MX.
            client.sendmail("app@dest.test", ["gone@dest.test"], "Subject: gone\r\n\r\nbody\r\n")
        auth = {"Authorization": f"Bearer {key.group(1)}"}
        for i in range(N_API):
            r = httpx.post(f"{url}/v3/mail/send", trust_env=False, headers=auth, json={
                "personalizations": [{"to": [{"email": f"a{i}@dest.test"}]}],
                "from": {"email": "demo@example.com"}, "subject": f"a{i}",
                "content": [{"type": "text/plain", "value": "body"}]})
            assert r.status_code == 202, r.text
        mx.wait_for(N_SMTP + N_API + 1)  # and the DSN
        # The MX's 250 comes before the worker records it: wait for the outcomes to be in.
        engine = sa.create_engine(db_url)
        count_by_status = sa.text("SELECT status, COUNT(*) FROM recipients GROUP BY status")
        deadline = time.monotonic() + 15
        while True:
            with engine.connect() as conn:
                queue = {s: int(n) for s, n in conn.execute(count_by_status)}
            if queue.get("delivered") == N_SMTP + N_API + 1 and queue.get("bounced") == 1:
                break
            assert time.monotonic() < deadline, queue
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while True:  # counters are written right after the record commits; one more moment
            r = httpx.get(f"{url}/metrics", trust_env=False)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain")
            samples = _samples(r.text)
            # Each process writes its batch twice a second: wait for the last of them (the
            # scraping process writes its own first).
            if (_total(samples, "mailrelay_recipients_total", outcome="delivered") >= N_SMTP + N_API + 1
                    and _total(samples, "mailrelay_recipients_total", outcome="bounced") >= 1
                    and _value(samples, "mailrelay_smtp_replies_total", listener="smtp", code="2xx")
                    >= 3 + 3 * (N_SMTP + 1)) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with engine.connect() as conn:
            assert {s: int(n) for s, n in conn.execute(count_by_status)} == queue  # nothing moved since
        engine.dispose()

        # Accepted by the SMTP parent and by the API process, delivered by two workers.
        assert _value(samples, "mailrelay_messages_accepted_total", listener="smtp", plan="free") == N_SMTP + 1
        assert _value(samples, "mailrelay_messages_accepted_total", listener="http", plan="free") == N_API
        assert _total(samples, "mailrelay_recipients_total", outcome="delivered") \
            == N_SMTP + N_API + 1 == len(mx.messages)
        assert _value(samples, "mailrelay_recipients_total", outcome="bounced", plan="free", provider="other") == 1
        # mx.dest.test is no big provider's; each delivery is labelled with the MX's provider
        assert _total(samples, "mailrelay_recipients_total", outcome="delivered", provider="other") \
            == N_SMTP + N_API + 1
        # Time to the 250 (SMTP) and to the 202 (API): one observation per message / request.
        assert _total(samples, "mailrelay_accept_latency_seconds_count", listener="smtp") == N_SMTP + 1
        assert _total(samples, "mailrelay_accept_latency_seconds_count", listener="http") == N_API
        assert _value(samples, "mailrelay_accept_latency_seconds_bucket", listener="smtp", le="+Inf") == N_SMTP + 1
        assert _total(samples, "mailrelay_recipients_total", outcome="deferred") == 0
        assert _total(samples, "mailrelay_delivery_latency_seconds_count") == N_SMTP + N_API + 1
        assert _value(samples, "mailrelay_smtp_connections_total", listener="smtp") == 1
        assert _value(samples, "mailrelay_smtp_accepted_tls_total", version="none") == N_SMTP + 1
        # 2xx: the greeting, EHLO, QUIT, and per message MAIL, RCPT, the end of data; 3xx: DATA's 354
        assert _value(samples, "mailrelay_smtp_replies_total", listener="smtp", code="2xx") == 3 + 3 * (N_SMTP + 1)
        assert _value(samples, "mailrelay_smtp_replies_total", listener="smtp", code="3xx") == N_SMTP + 1
        # The gauges read at scrape time: the queue as the database has it, both workers alive.
        for status, n in queue.items():
            assert _value(samples, "mailrelay_queue_recipients", status=status) == n, status
        assert _value(samples, "mailrelay_queue_recipients", status="deferred") == 0
        assert _value(samples, "mailrelay_queue_oldest_deferred_seconds") == 0
        assert _value(samples, "mailrelay_database_up") == 1
        assert sum(v for (name, _), v in samples.items() if name == "mailrelay_delivery_workers_alive") == 2
        assert "/metrics" not in httpx.get(f"{url}/v3/openapi.json", trust_env=False).text
        # The processes' files live in the node's own folder, made at start and removed at a stop.
        folder = tmp_path / "data" / "metrics" / str(server.proc.pid)
        assert any(folder.glob("counter_*.db")), list(folder.parent.glob("*/*"))
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert not folder.exists()
    finally:
        server.stop()

