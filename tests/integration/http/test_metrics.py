"""`/metrics` in the API's process: who may read it, and the queue read from the database.

The counts across a real node's processes are checked in tests/integration/delivery/test_serve_metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from mailrelay.http.app import OPENAPI_PATH
from tests.integration.http.conftest import APINode


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


def test_metrics_are_a_404_to_clients_outside_metrics_networks(api_factory: Callable[..., APINode]) -> None:
    # 127.0.0.1 is the only client address a test has: a range without it stands for the world.
    api = api_factory('metrics_networks = ["10.0.0.0/8", "::1/128"]\n')
    with api.client() as http:
        r = http.get("/metrics")
        assert r.status_code == 404, r.text
        assert r.json() == http.get("/no-such-path").json()  # the same answer as an unknown path
        assert http.get("/livez").status_code == 200
