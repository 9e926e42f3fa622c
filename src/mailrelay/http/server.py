"""Serving the API with uvicorn inside our own event loop and signal handling.

uvicorn's `Server.serve()` installs its own SIGINT/SIGTERM handlers (and re-raises the signal
when done). mailrelay decides itself when a process stops, so `_Server` leaves the handlers
alone: the process calls `stop()`, which lets requests in flight finish (at most
`server.shutdown_timeout`), then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from mailrelay.settings import Settings, parse_listen

log = logging.getLogger("mailrelay.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the process's own handlers stay in charge


class HTTPServer:
    def __init__(self, app: FastAPI, settings: Settings, ssl_context: ssl.SSLContext | None) -> None:
        host, port = parse_listen(settings.http.listen)
        config = uvicorn.Config(
            app, host=host, port=port, loop="none", lifespan="off", log_config=None,
            access_log=False, server_header=False, proxy_headers=False, log_level="warning", http="httptools",
            limit_concurrency=settings.http.max_concurrent,
            timeout_graceful_shutdown=int(settings.server.shutdown_timeout) or 1,
            ssl_certfile=str(settings.cert_path) if settings.http.tls else None,
            ssl_keyfile=str(settings.key_path) if settings.http.tls else None,
        )
        self._server = _Server(config)
        self.app = app
        # Set at stop: long responses (the dashboard's event streams) end on it, so stopping
        # does not wait for them until the graceful timeout.
        app.state.stopping = asyncio.Event()
        self._stopping = app.state.stopping
        self._task: asyncio.Task[None] | None = None
        self.address = f"{host}:{port}"
        self.port = port  # the bound one after start() (listen on port 0: any free port)
        self.scheme = "https" if settings.http.tls else "http"
        del ssl_context  # uvicorn builds its own from the same files

    async def start(self) -> bool:
        """Bind and serve; False when the address could not be bound (logged)."""
        config = self._server.config
        # Bound here rather than by uvicorn, which would exit the process on a bind error.
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):  # [http] processes > 1 share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((config.host, config.port))
            sock.listen(config.backlog)
        except OSError as exc:
            sock.close()
            log.error("HTTP API could not listen on %s: %s; change [http] listen, or set enabled = false",
                      self.address, exc.strerror or exc)
            return False
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.address = f"{config.host}:{self.port}"
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                failure = self._task.exception() if not self._task.cancelled() else None
                log.error("HTTP API could not start on %s%s", self.address, f": {failure}" if failure else "")
                return False
            await asyncio.sleep(0.02)
        log.info("HTTP API listening on %s://%s", self.scheme, self.address)
        return True

    async def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
