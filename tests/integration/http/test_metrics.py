"""`/metrics` in the API's process: who may read it, the queue read from the database, SMTP counts.

The counts across a real node's processes are checked in tests/integration/delivery/test_serve_metrics.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mailrelay.http.app import OPENAPI_PATH
from mailrelay.http.services import Services
from mailrelay.store.db import create_engine
from tests.integration.http.conftest import APINode
from tests.integration.http.test_health import _closed_port, _services, serve_with
from tests.integration.smtp.conftest import PASSWORD
from tests.integration.smtp.rawclient import auth_plain

__all__ = ["serve_with"]  # the fixture


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(http_get: Callable[[str], httpx.Response], url: str = "/metrics") -> Samples:
    r = http_get(url)
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_metrics_answer_loopback_with_the_queue_read_from_the_database(api: APINode) -> None:
    with api.client() as http:  # no key: loopback is in the default metrics_networks
        r = http.get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        assert "/metrics" not in http.get(OPENAPI_PATH).json()["paths"]
    assert families["mailrelay_database_up"].samples[0].value == 1
    queue = {s.labels["status"]: s.value for s in families["mailrelay_queue_recipients"].samples}
    assert queue["queued"] == queue["deferred"] == queue["delivered"] == 0  # every status, 0 too
    assert families["mailrelay_queue_oldest_deferred_seconds"].samples[0].value == 0
    for name in ("mailrelay_messages_accepted", "mailrelay_recipients", "mailrelay_smtp_replies"):
        assert families[name].type == "counter", name
    assert families["mailrelay_delivery_latency_seconds"].type == "histogram"
    assert families["mailrelay_accept_latency_seconds"].type == "histogram"


def test_metrics_are_a_404_to_clients_outside_metrics_networks(api_factory: Callable[..., APINode]) -> None:
    # 127.0.0.1 is the only client address a test has: a range without it stands for the world.
    api = api_factory('metrics_networks = ["10.0.0.0/8", "::1/128"]\n')
    with api.client() as http:
        r = http.get("/metrics")
        assert r.status_code == 404, r.text
        assert r.json() == http.get("/no-such-path").json()  # the same answer as an unknown path
        assert http.get("/livez").status_code == 200


def test_smtp_auth_failures_and_tls_versions_are_counted(api: APINode) -> None:
    # This process's counters are shared with the tests before this one: compare before and after.
    tls13 = ("mailrelay_smtp_accepted_tls_total", frozenset({("version", "TLSv1.3")}))
    failures = ("mailrelay_smtp_auth_failures_total", frozenset({("listener", "submission")}))
    with api.client() as http:
        before = _scrape(http.get)
        raw = api.node.raw("submission")
        raw.cmd("EHLO client.test")
        assert raw.cmd("STARTTLS")[0] == 220
        raw.starttls(api.node.client_ssl)
        raw.cmd("EHLO client.test")
        assert raw.cmd(auth_plain("alice", PASSWORD + "x"))[0] == 535
        raw.close()
        client = api.node.submission("alice")
        client.sendmail("alice@example.com", ["bob@example.net"], b"Subject: hi\r\n\r\nhi\r\n")
        client.quit()
        after = _scrape(http.get)
    assert after.get(failures, 0) - before.get(failures, 0) == 1
    assert after.get(tls13, 0) - before.get(tls13, 0) == 1
    assert after[("mailrelay_queue_recipients", frozenset({("status", "queued")}))] == 1
    # ... and by age: a message of just now is in qshape's first column
    assert after[("mailrelay_queue_recipients_by_age", frozenset({("status", "queued"), ("age", "0-5m")}))] == 1
    assert not any(name == "mailrelay_queue_recipients_by_age" and dict(labels)["age"] != "0-5m"
                   for name, labels in after)


def test_counters_are_served_while_the_database_does_not_answer(
        api: APINode, serve_with: Callable[[Services], str]) -> None:
    refused = create_engine(f"postgresql://mailrelay@127.0.0.1:{_closed_port()}/mailrelay", connect_timeout=2)
    try:
        url = serve_with(dataclasses.replace(_services(api), engine=refused))
        with api.client() as http:
            samples = _scrape(http.get, f"{url}/metrics")
    finally:
        refused.dispose()
    assert samples[("mailrelay_database_up", frozenset())] == 0
    assert not any(name.startswith("mailrelay_queue_") for name, _ in samples)
    assert any(name == "mailrelay_smtp_replies_total" for name, _ in samples)  # counters all the same
