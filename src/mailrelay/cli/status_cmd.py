"""`mailrelay status`: is this mailrelay healthy, as seen from its database?

The database (reachable? its URL, password masked), its schema revision against this version's
head, the delivering processes of every node (up of total, per host, as `mailrelay node list`
and the operator's nodes page count them), the queue by recipient status, and how long the
oldest deferred recipient's message has waited. Read-only: unlike the other commands it does
not migrate the database (a status must not change what it reports), and a database it cannot
reach is part of the answer rather than an error.

Exit codes: 0 healthy; 1 something is wrong (the database unreachable, its schema not at this
version's head, no delivery process up); 2 a bad config file or option.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mailrelay.cli.common import load_config
from mailrelay.cli.output import format_table, format_time, printable, to_json
from mailrelay.core.dates import format_age
from mailrelay.core.status import DEFERRED, OUTBOUND
from mailrelay.settings import Settings, redact_url
from mailrelay.spool.nodes import HostSummary, by_host, listing
from mailrelay.spool.reader import QueueReader
from mailrelay.store import migrate
from mailrelay.store.db import StorageError, is_sqlite, normalize_url
from mailrelay.store.health import ping
from mailrelay.store.open import engine_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay status` (its parser made by cli/main.py)."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)


@dataclass
class Status:
    database: str  # the URL, password masked
    reachable: bool = False
    error: str | None = None  # why the database could not be reached or read
    revision: str | None = None
    head: str = field(default_factory=migrate.head_revision)
    hosts: list[HostSummary] = field(default_factory=list)
    queue: dict[str, int] = field(default_factory=dict)  # recipients per status
    oldest_deferred: float | None = None  # when the oldest deferred recipient's message was accepted
    problems: list[str] = field(default_factory=list)

    @property
    def up(self) -> int:
        return sum(h.up for h in self.hosts)

    @property
    def workers(self) -> int:
        return sum(h.workers for h in self.hosts)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _missing_file(url: str) -> bool:
    """A SQLite URL whose file is not there (connecting would make an empty one)."""
    url = normalize_url(url)
    path = url.split("///", 1)[1] if is_sqlite(url) and "///" in url else ""
    return bool(path) and path != ":memory:" and not Path(path).exists()


def gather(settings: Settings, now: float) -> Status:
    url = settings.storage_url
    status = Status(redact_url(url))
    if _missing_file(url):
        status.error = "no database file there (`mailrelay serve` creates it)"
        status.problems.append(f"database unreachable: {status.error}")
        return status
    engine = engine_for(settings)
    try:
        try:
            ping(engine)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            status.error = _reason(exc)
            status.problems.append(f"database unreachable: {status.error}")
            return status
        status.reachable = True
        try:
            status.revision = migrate.current_revision(engine)
            if status.revision is None:
                status.problems.append("the database has no schema (`mailrelay serve` creates it)")
                return status
            if status.revision != status.head:
                status.problems.append(f"schema at revision {status.revision}, this mailrelay expects "
                                       f"{status.head} (a node of this version migrates it at start)")
            with engine.connect() as conn:
                status.hosts = by_host(listing(conn), now, settings.delivery.dead_after)
            reader = QueueReader(engine)
            status.queue = reader.by_state()
            status.oldest_deferred = reader.oldest(DEFERRED)
        except (sa.exc.SQLAlchemyError, StorageError, OSError) as exc:  # e.g. a schema of another version
            status.error = _reason(exc)
            status.problems.append(f"database read failed: {status.error}")
            return status
    finally:
        engine.dispose()
    if status.up == 0:
        status.problems.append("no delivery process is up: nothing is being delivered"
                               if not status.workers else
                               f"no delivery process is up ({status.workers} silent for over "
                               f"{settings.delivery.dead_after:g}s)")
    return status


def _queue(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Every status of mail we send (0 too), in display order, then any other with recipients."""
    return [(s, counts.get(s, 0)) for s in OUTBOUND] + sorted((s, n) for s, n in counts.items() if s not in OUTBOUND)


def as_json(s: Status, now: float) -> dict[str, Any]:
    return {
        "healthy": not s.problems, "problems": s.problems,
        "database": {"url": s.database, "reachable": s.reachable, "error": s.error},
        "schema": {"revision": s.revision, "head": s.head, "current": s.revision == s.head},
        "delivery": {"up": s.up, "workers": s.workers,
                     "hosts": [{"host": h.host, "up": h.up, "workers": h.workers, "leased": h.leased,
                                "last_seen": h.last_seen} for h in s.hosts]},
        "queue": dict(_queue(s.queue)) if s.revision is not None and s.error is None else {},
        "oldest_deferred": None if s.oldest_deferred is None else
        {"created_at": s.oldest_deferred, "age_seconds": max(0.0, now - s.oldest_deferred)},
    }


def _text(s: Status, now: float) -> str:
    if not s.reachable:
        return f"database  {s.database}  unreachable"
    schema = "none" if s.revision is None else \
        f"{s.revision} (current)" if s.revision == s.head else f"{s.revision} (this mailrelay: {s.head})"
    lines = [f"database  {s.database}  reachable", f"schema    {schema}"]
    if s.revision is None or s.error is not None:
        return "\n".join(lines)
    lines.append(f"delivery  {s.up} of {s.workers} processes up" + (f" on {len(s.hosts)} hosts" if len(s.hosts) > 1
                                                                   else f" on {s.hosts[0].host}" if s.hosts else ""))
    waited = "none" if s.oldest_deferred is None else \
        f"{format_age(now - s.oldest_deferred)} (accepted {format_time(s.oldest_deferred)} UTC)"
    lines.append(f"deferred  oldest {waited}")
    if s.hosts:
        lines += ["", format_table(("host", "up", "processes", "leased", "last heartbeat"),
                                   [(h.host, h.up, h.workers, h.leased, f"{format_age(now - h.last_seen)} ago")
                                    for h in s.hosts], align="<>>><")]
    lines += ["", format_table(("status", "recipients"), _queue(s.queue), align="<>")]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_config(args)
    now = time.time()
    status = gather(settings, now)
    print(to_json(as_json(status, now)) if args.json else _text(status, now))
    for problem in status.problems:  # one line each, as every command's errors
        print(f"mailrelay: error: {printable(' '.join(problem.split()))}", file=sys.stderr)
    return 1 if status.problems else 0
