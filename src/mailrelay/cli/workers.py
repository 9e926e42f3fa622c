"""Delivery worker processes started by `mailrelay serve` beside the SMTP process.

Python runs one core per process; Postfix spreads its work over processes too. Accepting mail
stays in the serve process, delivery (with DKIM signing) runs in `delivery.processes` children
that share the queue through the database, each with a lease owner name of its own, unique to
that start (spool.nodes). A pipe from the parent wakes a child when new mail is committed; when
the parent dies, even by SIGKILL, the pipe reaches end-of-file and the child stops as on
SIGTERM: it starts no new transaction, gives back what it has not started, and finishes and
records the transactions in flight. A restarted parent's new workers never touch its leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from mailrelay import metrics
from mailrelay.app import App
from mailrelay.logs import setup_logging
from mailrelay.settings import Settings
from mailrelay.spool.nodes import new_name
from mailrelay.store.db import create_engine

log = logging.getLogger("mailrelay")

WORKER_NICENESS = 5  # added to the workers' nice value (lower CPU priority than the SMTP process)


@dataclass
class Worker:
    process: BaseProcess
    wake_fd: int  # parent's end of the pipe


def start_workers(settings: Settings) -> list[Worker]:
    ctx = multiprocessing.get_context("spawn")  # no forked copies of the parent's loop/threads
    workers = []
    for index in range(settings.delivery.processes):
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child_main, args=(settings, index, reader), name=f"delivery-{index}",
                              daemon=False)
        process.start()
        reader.close()
        fd = os.dup(writer.fileno())
        writer.close()
        os.set_blocking(fd, False)
        workers.append(Worker(process, fd))
        log.info("delivery worker %d started (pid %d)", index, process.pid)
    return workers


def wake(workers: list[Worker]) -> None:
    """New mail is committed: nudge every worker (never blocks; a full pipe already says so)."""
    for w in workers:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(w.wake_fd, b"w")


async def stop_workers(workers: list[Worker], timeout: float) -> None:
    for w in workers:
        if w.process.is_alive() and w.process.pid is not None:
            os.kill(w.process.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    for w in workers:
        await loop.run_in_executor(None, w.process.join, timeout + 5)
        if w.process.is_alive():
            log.warning("delivery worker %s did not stop in time; killing it", w.process.pid)
            w.process.kill()
            await loop.run_in_executor(None, w.process.join, 5)
        metrics.process_gone(w.process.pid)
        os.close(w.wake_fd)


def worker_share(settings: Settings) -> Settings:
    """One worker's settings: the node-wide connection limits divided between the workers
    (rounded up), so `max_connections` and `max_per_domain` hold for the node as a whole."""
    d = settings.delivery
    n = max(1, d.processes)
    return dataclasses.replace(settings, delivery=dataclasses.replace(
        d, max_connections=-(-d.max_connections // n), max_per_domain=-(-d.max_per_domain // n)))


def _child_main(settings: Settings, index: int, wake: multiprocessing.connection.Connection) -> None:
    settings = worker_share(settings)
    setup_logging(settings.server.log_level, settings.server.log_format)
    # Accepting comes first: a client is waiting for each 250, while delivery is throughput
    # work that can yield a few milliseconds. On a busy box this keeps the workers (DKIM
    # signing is their main cost) from starving the SMTP process of CPU; measured on 2 cores,
    # two workers at +5 delivered 8-9 % more end to end than one; two at the same priority
    # did not.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    # On SQLite, claims and outcomes need not wait for the disk (see create_engine): this keeps
    # the workers' commits from holding the write lock the SMTP process needs.
    engine = create_engine(settings.storage_url, flush_commits=False, connect_timeout=settings.storage.connect_timeout)
    node = new_name(socket.gethostname(), f"-d{index}")
    app = App(settings, engine=engine, deliver=True, node=node, serve_smtp=False)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(_child(app, wake.fileno()))
    except Exception:  # logged in the node's format (multiprocessing would print it raw)
        log.exception("delivery worker %d failed", index)
        raise SystemExit(1) from None


async def _child(app: App, fd: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    os.set_blocking(fd, False)
    assert app.agent is not None

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:  # the parent is gone
            loop.remove_reader(fd)
            stop.set()
            return
        app.agent.wake()  # type: ignore[union-attr]

    loop.add_reader(fd, readable)
    await app.start()
    await stop.wait()
    await app.stop()
