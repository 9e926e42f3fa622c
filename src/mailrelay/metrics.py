"""The counters and histograms of `/metrics` (Prometheus, prometheus-client), kept across processes.

`mailrelay serve` is several processes: the parent accepts SMTP, delivery workers deliver, HTTP
processes serve the API. prometheus-client's multiprocess mode keeps each process's values in
its own memory-mapped file in one folder; a scrape (in any HTTP process) sums the files, so a
counter is the node's total whatever process incremented it, and a worker that died still counts.
`serve` calls `enable` before it starts any child: a new folder of its own under the data
directory (metrics/PID) is named in PROMETHEUS_MULTIPROC_DIR, which the children inherit;
prometheus-client reads that variable when a child imports it. Without `enable` (tests, the
CLI) the values stay in the process's memory, which costs the same.

These are process-wide objects, unlike everything else here, which is built from Settings and
passed down: a Prometheus registry is process-wide by design, and passing a metrics object to
every place that counts would touch every constructor for a counter increment (about 2 µs).
Every metric has labels: prometheus-client makes a label set's value when it is first used, so
values made after `enable` are the multiprocess kind even in the process that imported this first.

Counting is batched in multiprocess mode: an increment of a shared value takes a lock and
writes the memory-mapped file (about 6 µs; a histogram observation 12 µs), and an SMTP message
makes nine of them (the greeting, a reply per command, the accepted counts). `count` and
`observe` add to this process's own table instead (under 1 µs) and a thread writes the table to
the files twice a second and at exit: a scrape is at most half a second behind.

Security: labels carry only fixed words, plan names, provider names and reply classes: no
address, no account name.
"""

from __future__ import annotations

import atexit
import bisect
import functools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TypeVar

from prometheus_client import Counter, Histogram, values

_Labelled = TypeVar("_Labelled", Counter, Histogram)

ENV = "PROMETHEUS_MULTIPROC_DIR"

accepted = Counter("mailrelay_messages_accepted", "Messages accepted and queued (250 sent, or 202)",
                   ["listener", "plan"])
recipients = Counter("mailrelay_recipients",
                     "Recipient outcomes of delivery attempts, by the provider running the remote server",
                     ["outcome", "plan", "provider"])
connections = Counter("mailrelay_smtp_connections", "SMTP connections accepted", ["listener"])
replies = Counter("mailrelay_smtp_replies", "SMTP replies sent, by class (2xx, 4xx, 5xx)",
                  ["listener", "code"])
auth_failures = Counter("mailrelay_smtp_auth_failures", "Failed SMTP AUTH attempts", ["listener"])
accepted_tls = Counter("mailrelay_smtp_accepted_tls",
                       "Messages accepted over SMTP, by the session's TLS version (\"none\": plain text)",
                       ["version"])
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
delivery_seconds = Histogram("mailrelay_delivery_latency_seconds",
                             "From acceptance to the remote server's 250 for a recipient", ["plan"],
                             buckets=DELIVERY_BUCKETS)
ACCEPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
accept_seconds = Histogram("mailrelay_accept_latency_seconds",
                           "From the end of the message (SMTP's final dot, the API's request read) to "
                           "its 250 or 202: the durable commit", ["listener"], buckets=ACCEPT_BUCKETS)
_BUCKETS = {delivery_seconds: DELIVERY_BUCKETS, accept_seconds: ACCEPT_BUCKETS}
webhook_posts = Counter("mailrelay_webhook_posts", "Event webhook POSTs, by outcome", ["outcome"])


@functools.cache
def child(metric: _Labelled, *labels: str) -> _Labelled:
    """`metric.labels(*labels)`, kept: the lookup costs more than the increment itself (about
    10 µs against 2 on a busy box), and label values here are few (listeners, plans, outcomes)."""
    return metric.labels(*labels)


FLUSH_EVERY = 0.5  # seconds between writes of a process's batched counts to the shared files
_batched = bool(os.environ.get(ENV))  # a child started by a node that called `enable`
_lock = threading.Lock()
_counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
_observed: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}  # bucket counts, then the sum
_flusher: threading.Thread | None = None


def count(metric: Counter, *labels: str, n: float = 1.0) -> None:
    """`metric.labels(*labels).inc(n)`, batched when counting across processes."""
    if not _batched:
        child(metric, *labels).inc(n)
        return
    key = (metric, labels)
    with _lock:
        _counts[key] = _counts.get(key, 0.0) + n
    if _flusher is None:
        _start_flusher()


def observe(metric: Histogram, value: float, *labels: str) -> None:
    """`metric.labels(*labels).observe(value)`, batched when counting across processes."""
    if not _batched:
        child(metric, *labels).observe(value)
        return
    key = (metric, labels)
    buckets = _BUCKETS[metric]
    i = bisect.bisect_left(buckets, value)  # the first bound >= value; len(buckets): +Inf
    with _lock:
        row = _observed.get(key)
        if row is None:
            row = _observed[key] = [0.0] * (len(buckets) + 2)
        row[i] += 1
        row[-1] += value
    if _flusher is None:
        _start_flusher()


def flush() -> None:
    """Write this process's batched counts to the shared files."""
    global _counts, _observed
    with _lock:
        counts, _counts = _counts, {}
        observed, _observed = _observed, {}
    for (counter, labels), n in counts.items():
        child(counter, *labels).inc(n)
    for (hist, labels), row in observed.items():
        c = child(hist, *labels)
        # prometheus-client keeps a histogram as a count per bucket (not cumulative) and a sum,
        # which observe() increments one at a time: add a batch's the same way (tested against
        # observe in tests/unit/test_metrics.py).
        for i, n in enumerate(row[:-1]):
            if n:
                c._buckets[i].inc(n)
        c._sum.inc(row[-1])


def _start_flusher() -> None:
    global _flusher
    with _lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_forever, name="metrics-flush", daemon=True)
    _flusher.start()
    atexit.register(flush)


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        flush()


def enable(data_dir: Path) -> Path:
    """Count across this process and the children started after this (call before them).

    The folder is `metrics/PID` under the data directory, new and empty: a new start's counters
    begin at zero, as Prometheus expects of a restarted target. Folders of starts whose process
    is gone (stopped, or killed before it could clean up) are removed; several nodes sharing a
    data directory keep their own."""
    base = data_dir / "metrics"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        if not (old.name.isdigit() and _running(int(old.name))):
            shutil.rmtree(old, ignore_errors=True)
    path = base / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    os.environ[ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    global _batched
    _batched = True
    return path


def disable(path: Path) -> None:
    """The node stopped: its folder goes (after its children have exited)."""
    shutil.rmtree(path, ignore_errors=True)


def process_gone(pid: int | None) -> None:
    """A child exited: its live gauges leave the sum (its counters stay: they happened)."""
    if pid is not None and os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier start with our pid (a container's pid 1): its counts are old
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
