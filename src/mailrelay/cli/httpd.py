"""The HTTP API processes started by `mailrelay serve` beside the SMTP process.

The API runs in a process of its own, as the delivery workers do: JSON parsing, MIME building
and argon2 key checks of a busy API then never take the SMTP event loop's time, and an idle
API costs the SMTP process nothing but a pipe. It shares the queue through the database. After
each commit it writes a byte to the parent, which wakes the delivery workers as for SMTP mail.
SIGTERM (sent by the parent when it stops, at the same moment it stops its listeners) lets
requests in flight finish, at most `server.shutdown_timeout`; when the parent dies, even by
SIGKILL, the pipe from it reaches end-of-file and the child stops the same way. With
`[http] processes` above 1, that many children share the port (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from mailrelay import metrics
from mailrelay.app import App
from mailrelay.logs import setup_logging
from mailrelay.settings import Settings
from mailrelay.smtp.server import ListenerState
from mailrelay.store.db import create_engine

log = logging.getLogger("mailrelay")
GC_THRESHOLDS = (20_000, 50, 100)  # Python's are (700, 10, 10): a request makes a few hundred objects


@dataclass
class HTTPChild:
    process: BaseProcess
    alive_fd: int  # our end of the pipe whose EOF tells the child we are gone
    wake_fd: int  # where the child says "new mail committed"


def start_http(settings: Settings, on_enqueued: Callable[[], None] | None,
               listeners: ListenerState) -> list[HTTPChild]:
    """`listeners`: what the SMTP listeners bound (started after them: /readyz tells it)."""
    return [_start_one(settings, index, on_enqueued, listeners) for index in range(settings.http.processes)]


def _start_one(settings: Settings, index: int, on_enqueued: Callable[[], None] | None,
               listeners: ListenerState) -> HTTPChild:
    ctx = multiprocessing.get_context("spawn")
    alive_r, alive_w = ctx.Pipe(duplex=False)
    wake_r, wake_w = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(settings, alive_r, wake_w, listeners),
                          name=f"http-{index}", daemon=False)
    process.start()
    alive_r.close()
    wake_w.close()
    alive_fd, wake_fd = os.dup(alive_w.fileno()), os.dup(wake_r.fileno())
    alive_w.close()
    wake_r.close()
    os.set_blocking(wake_fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(wake_fd, 4096)
        except BlockingIOError:
            return
        if not data:  # the child is gone
            loop.remove_reader(wake_fd)
            return
        if on_enqueued is not None:
            on_enqueued()

    loop.add_reader(wake_fd, readable)
    log.info("HTTP API process started (pid %d)", process.pid)
    return HTTPChild(process, alive_fd, wake_fd)


def signal_http(children: list[HTTPChild]) -> None:
    """Ask the children to stop (each finishes the requests in flight)."""
    for child in children:
        if child.process.is_alive() and child.process.pid is not None:
            os.kill(child.process.pid, signal.SIGTERM)


async def stop_http(children: list[HTTPChild], timeout: float) -> None:
    signal_http(children)
    loop = asyncio.get_running_loop()
    for child in children:
        await loop.run_in_executor(None, child.process.join, timeout + 5)
        if child.process.is_alive():
            log.warning("HTTP API process %s did not stop in time; killing it", child.process.pid)
            child.process.kill()
            await loop.run_in_executor(None, child.process.join, 5)
        metrics.process_gone(child.process.pid)
        with contextlib.suppress(Exception):
            loop.remove_reader(child.wake_fd)
        os.close(child.wake_fd)
        os.close(child.alive_fd)


def _child_main(settings: Settings, alive: multiprocessing.connection.Connection,
                wake: multiprocessing.connection.Connection, listeners: ListenerState) -> None:
    setup_logging(settings.server.log_level, settings.server.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    engine = create_engine(settings.storage_url, connect_timeout=settings.storage.connect_timeout)
    app = App(settings, engine=engine, deliver=False, serve_smtp=False, inline_writer=False)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        code = run(_child(app, alive.fileno(), wake.fileno(), listeners))
    except Exception:  # logged in the node's format (multiprocessing would print it raw)
        log.exception("HTTP API process failed")
        code = 1
    raise SystemExit(code)


async def _child(app: App, alive_fd: int, wake_fd: int, listeners: ListenerState) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    os.set_blocking(alive_fd, False)
    os.set_blocking(wake_fd, False)

    def parent_gone() -> None:
        try:
            data = os.read(alive_fd, 4096)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(alive_fd)
            stop.set()

    def committed() -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(wake_fd, b"w")

    loop.add_reader(alive_fd, parent_gone)
    app.writer.on_enqueued = committed
    server = app.build_http(listeners)
    await app.start()
    # What start-up built (the app, its routes and OpenAPI models, the ORM's tables) lives as
    # long as the process: out of the collector's sight, and fewer collections of what each
    # request makes. Both measured: 560 -> 690 requests a second on mail/send.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if not await server.start():
        await app.stop()
        return 1
    await stop.wait()
    await server.stop()
    await app.stop()
    return 0
