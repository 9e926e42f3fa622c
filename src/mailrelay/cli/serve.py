"""`mailrelay serve`: write a default config on first run, start the node, stop on a signal."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
from pathlib import Path

from mailrelay import metrics
from mailrelay.app import App, raise_file_limit
from mailrelay.cli.httpd import HTTPChild, signal_http, start_http, stop_http
from mailrelay.cli.workers import Worker, start_workers, stop_workers, wake
from mailrelay.logs import setup_logging
from mailrelay.settings import ConfigError, load_settings, write_default_config

log = logging.getLogger("mailrelay")

def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, certificate and database, then exit")


def cmd_serve(args: argparse.Namespace) -> int:
    path = Path(args.config_path)
    wrote = not path.exists() and not args.config_given
    if wrote:
        write_default_config(path)
    settings = load_settings(path)
    setup_logging(settings.server.log_level, settings.server.log_format)
    json_logs = settings.server.log_format == "json"
    if wrote and json_logs:
        log.info("wrote a default configuration to %s", path)
    elif wrote:
        print(f"mailrelay: wrote a default configuration to {path}", file=sys.stderr)
    app = App(settings)
    if getattr(args, "check", False):
        print(f"mailrelay: configuration {path} is valid", file=sys.stderr)
        app.engine.dispose()
        return 0
    demo = app.ensure_demo_account()
    if demo is not None and json_logs:
        # JSON lines go to a log store: no password there. The operator sets one instead.
        log.warning("a demo account %r was created; its password is not logged with log_format = \"json\": "
                    "set one with `mailrelay account passwd %s`", demo.username, demo.username)
    elif demo is not None:
        print("\n  A demo account was created; its password is shown only this once:\n"
              f"    username: {demo.username}\n    password: {demo.password}\n"
              "  (manage accounts with `mailrelay account --help`)\n", file=sys.stderr, flush=True)
    raise_file_limit()
    # Before any child starts: they inherit where to write their counters.
    counters = metrics.enable(settings.data_dir) if settings.http.enabled else None
    try:
        import uvloop  # a faster loop; asyncio's own works the same, only slower
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency on POSIX
        code = asyncio.run(_serve(app))
    else:
        code = int(uvloop.run(_serve(app)))
    if counters is not None:
        metrics.disable(counters)
    return code


async def _serve(app: App) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failures = await app.start()
    for failure in failures:
        log.warning("%s", failure.advice())
    if not app.smtp.bound:
        log.error("no listener could be bound; nothing to serve")
        await app.stop()
        return 1
    bound = ", ".join(f"{name} {host}:{port}" for name, addrs in app.smtp.bound.items()
                      for host, port in addrs)
    workers: list[Worker] = []
    if app.settings.delivery.enabled and app.settings.delivery.processes > 0:
        workers = start_workers(app.settings)
        app.writer.on_enqueued = functools.partial(wake, workers)
    http: list[HTTPChild] = []
    if app.settings.http.enabled:
        # Mail the API commits wakes delivery as SMTP mail does. Started after the SMTP
        # listeners are bound: each child's /readyz tells what they bound.
        http = start_http(app.settings, lambda: app.writer.on_enqueued() if app.writer.on_enqueued else None,
                          app.smtp.state())
    log.info("mailrelay ready as %s: %s", app.settings.server.hostname, bound)
    await stop.wait()
    log.info("stopping: finishing sessions in flight (at most %.0fs)", app.settings.server.shutdown_timeout)
    signal_http(http)  # SMTP and HTTP drain together
    await app.stop()
    await stop_http(http, app.settings.server.shutdown_timeout)
    await stop_workers(workers, app.settings.server.shutdown_timeout)
    log.info("stopped")
    return 0


__all__ = ["ConfigError", "add_serve_arguments", "cmd_serve"]
