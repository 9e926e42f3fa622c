"""`/metrics`: the node's counters in Prometheus's text format, and the queue read at scrape time.

The counters (mailrelay.metrics) are summed over the node's processes: the SMTP parent, the
delivery workers and the HTTP processes each write their own file, and any HTTP process that
is asked reads them all (prometheus-client's MultiProcessCollector). The queue by status, the
age of the oldest deferred message and the delivery processes per host are read from the
database at each scrape: three small GROUP BY / MIN queries, on the executor, waited for at
most SCRAPE_TIMEOUT seconds; if the database does not answer, the counters are still served
and `mailrelay_database_up` says 0. Left out of the OpenAPI document.

Security: no key or session is asked; only clients whose address is in `[http]
metrics_networks` (default loopback) get an answer, the others a 404 as for an unknown path
(the peer address of the connection: a proxy's X-Forwarded-For is not trusted).
"""

from __future__ import annotations

import asyncio
import glob
import ipaddress
import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mailrelay import metrics as counting
from mailrelay.core.status import DEFERRED, OUTBOUND
from mailrelay.http.services import Services
from mailrelay.metrics import ENV
from mailrelay.spool.nodes import by_host, listing
from mailrelay.spool.reader import SHAPE_BUCKETS, QueueReader
from mailrelay.store.health import describe

log = logging.getLogger("mailrelay.http")

SCRAPE_TIMEOUT = 2.0  # seconds a scrape waits for the database's numbers
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(include_in_schema=False)
AGE_LABELS = (*(f"{low}-{high}m" for low, high in zip((0, *SHAPE_BUCKETS[:-1]), SHAPE_BUCKETS, strict=True)),
              f"{SHAPE_BUCKETS[-1]}m+")  # the label of each SHAPE_BUCKETS column


@dataclass
class _Reading:
    """The database's numbers at one scrape."""

    up: bool = False
    queue: dict[str, int] = field(default_factory=dict)
    oldest_deferred: float | None = None
    hosts: list[tuple[str, int, int]] = field(default_factory=list)  # (host, alive, with a row)
    ages: dict[tuple[str, int], int] = field(default_factory=dict)  # (status, SHAPE_BUCKETS column) -> n


class _Database(Collector):
    def __init__(self, reading: _Reading, now: float) -> None:
        self._reading = reading
        self._now = now

    def collect(self) -> Iterator[Metric]:
        r = self._reading
        yield GaugeMetricFamily("mailrelay_database_up", "1 if the database answered this scrape", value=int(r.up))
        if not r.up:
            return
        queue = GaugeMetricFamily("mailrelay_queue_recipients", "Recipients in the queue, by status",
                                  labels=["status"])
        for status in (*OUTBOUND, *sorted(set(r.queue) - set(OUTBOUND))):
            queue.add_metric([status], r.queue.get(status, 0))
        yield queue
        ages = GaugeMetricFamily("mailrelay_queue_recipients_by_age",
                                 "Recipients waiting (queued, deferred), by status and the age of their message "
                                 "(qshape's columns, in minutes)", labels=["status", "age"])
        for (status, column), n in sorted(r.ages.items()):
            ages.add_metric([status, AGE_LABELS[column]], n)
        yield ages
        yield GaugeMetricFamily("mailrelay_queue_oldest_deferred_seconds",
                                "Age of the oldest message with a deferred recipient (0: none)",
                                value=0.0 if r.oldest_deferred is None else max(0.0, self._now - r.oldest_deferred))
        alive = GaugeMetricFamily("mailrelay_delivery_workers_alive",
                                  "Delivery processes whose heartbeat is recent, by host", labels=["host"])
        rows = GaugeMetricFamily("mailrelay_delivery_workers",
                                 "Delivery processes registered in the nodes table, by host", labels=["host"])
        for host, up, workers in r.hosts:
            alive.add_metric([host], up)
            rows.add_metric([host], workers)
        yield alive
        yield rows


class _Files(Collector):
    """The counters of every process of the node, summed from their files.

    prometheus-client creates a process's file before it sizes it, so a scrape can meet a file
    of 0 bytes and its collector raises (struct.error), failing the whole scrape: seen as a 500
    about once in ten scrapes taken as a worker counted its first value (upstream
    prometheus/client_python#1199). A file with no bytes has nothing recorded yet: left out;
    one that is being resized is read again after a moment."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterator[Metric]:
        for attempt in range(3):
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _size(f) > 0]
            try:
                return iter(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
            except (struct.error, RuntimeError, FileNotFoundError):
                if attempt == 2:
                    raise
                time.sleep(0.01)
        raise AssertionError("unreachable")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # gone between the listing and now (a dead process's gauges)
        return 0


class _Local(Collector):
    """This process's own metrics, when the node does not count across processes (tests)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class Scraper:
    """What /metrics answers, for one HTTP process."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._networks = services.settings.http.metrics_networks
        self._failing = False

    def allowed(self, host: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    async def exposition(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            reading = await asyncio.wait_for(loop.run_in_executor(self._services.executor, self._read),
                                             SCRAPE_TIMEOUT)
        except TimeoutError:
            reading = _Reading()
            self._note(f"the database did not answer within {SCRAPE_TIMEOUT:g}s")
        registry = CollectorRegistry(auto_describe=False)
        path = os.environ.get(ENV)
        if path:
            counting.flush()  # this process's own batch: what it accepted is in its answer
            registry.register(_Files(path))
        else:
            registry.register(_Local())
        registry.register(_Database(reading, time.time()))
        return generate_latest(registry)

    def _read(self) -> _Reading:
        engine = self._services.engine
        try:
            reader = QueueReader(engine)
            queue = reader.by_state()
            oldest = reader.oldest(DEFERRED)
            ages = reader.by_age(time.time())
            with engine.connect() as conn:
                hosts = by_host(listing(conn), time.time(), self._services.settings.delivery.dead_after)
        except Exception as exc:
            self._note(describe(exc))
            return _Reading()
        if self._failing:
            self._failing = False
            log.info("/metrics: the database answers again")
        return _Reading(True, queue, oldest, [(h.host, h.up, h.workers) for h in hosts], ages)

    def _note(self, detail: str) -> None:
        """Logged once per change: a scrape every 15 s must not fill the log during an outage."""
        if not self._failing:
            self._failing = True
            log.warning("/metrics: the queue could not be read (%s); counters served without it", detail)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    scraper: Scraper = request.app.state.scraper
    if not scraper.allowed(request.client.host if request.client else None):
        raise HTTPException(404)  # as for a path that does not exist
    return Response(await scraper.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def install(api: FastAPI, services: Services) -> None:
    api.state.scraper = Scraper(services)
    api.include_router(router)
