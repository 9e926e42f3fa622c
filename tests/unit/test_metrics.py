"""Batched counting (mailrelay.metrics.count/observe in multiprocess mode) adds up to what
prometheus-client's own inc/observe would have written. Run in a child process: multiprocess
mode is chosen when prometheus-client is imported and would change this process for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from mailrelay import metrics

values = [0.0004, 0.001, 0.0011, 0.003, 0.02, 0.7, 4.0, 12.0, 99.0]
for v in values:
    metrics.observe(metrics.accept_seconds, v, "smtp")
    metrics.accept_seconds.labels("http").observe(v)  # written at once, the reference
for _ in range(7):
    metrics.count(metrics.replies, "smtp", "2xx")
metrics.count(metrics.recipients, "delivered", "free", "google", n=3)
registry = CollectorRegistry()
MultiProcessCollector(registry, path=sys.argv[1])
unflushed = [s for f in registry.collect() for s in f.samples if s.labels.get("listener") == "smtp"]
time.sleep(metrics.FLUSH_EVERY * 3)  # the flusher thread writes the batch
out = {}
for f in registry.collect():
    for s in f.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
print(json.dumps({"unflushed": len(unflushed), "samples": out}))
"""


def test_batched_counts_and_observations_equal_prometheus_client_own(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["unflushed"] == 0  # batched: nothing in the files before the flush
    samples: dict[str, float] = result["samples"]

    def value(name: str, **labels: str) -> float:
        return samples[name + json.dumps(labels, sort_keys=True)]

    hist = "mailrelay_accept_latency_seconds"
    smtp = {k.replace('"smtp"', '"X"'): v for k, v in samples.items() if k.startswith(hist) and '"smtp"' in k}
    http = {k.replace('"http"', '"X"'): v for k, v in samples.items() if k.startswith(hist) and '"http"' in k}
    assert smtp == http and len(smtp) == 13 + 1 + 2  # buckets, +Inf, count and sum
    assert value(f"{hist}_count", listener="smtp") == 9
    assert value(f"{hist}_bucket", listener="smtp", le="0.001") == 2  # 0.0004 and 0.001 (le is <=)
    assert value("mailrelay_smtp_replies_total", listener="smtp", code="2xx") == 7
    assert value("mailrelay_recipients_total", outcome="delivered", plan="free", provider="google") == 3
