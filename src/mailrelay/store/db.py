"""Engine creation for SQLite (WAL, synchronous=FULL) and PostgreSQL, and migrations on start."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailrelay.settings import StorageSettings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Seconds to reach PostgreSQL, storage.connect_timeout's default (defined there, once): without
# one, psycopg waits 130 s for a server that accepts the connection and never answers.
DEFAULT_CONNECT_TIMEOUT = StorageSettings().connect_timeout
MAX_ROW_LIMIT = 2**31 - 1  # the largest LIMIT every driver takes (past it: OverflowError)


def check_row_limit(value: int) -> int:
    """A LIMIT a user asked for (`--limit`, `?limit=`): 1 to MAX_ROW_LIMIT, else ValueError saying so."""
    if value < 1:
        raise ValueError(f"expected at least 1, got {value}")
    if value > MAX_ROW_LIMIT:
        raise ValueError(f"expected at most {MAX_ROW_LIMIT}, got {str(value)[:20]}")
    return value


class StorageError(Exception):
    """The database cannot be opened or migrated; the message says what to check."""


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy would pick psycopg2 by default)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def connect_timeout_seconds(timeout: float) -> int:
    """What libpq will wait: whole seconds, rounded up, at least 2."""
    return max(2, math.ceil(timeout))


def server_address(engine: Engine) -> str:
    """HOST:PORT of a PostgreSQL engine's server (never its user or password)."""
    url = engine.url
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, synchronous: str = "FULL") -> None:
    cur = dbapi_conn.cursor()
    # First, so that the pragmas below wait for a busy database instead of failing at once.
    cur.execute("PRAGMA busy_timeout=10000")
    # Takes effect only on a database with no tables yet (a new one): then the free pages that
    # retention leaves can be given back with `PRAGMA incremental_vacuum` (store.retention).
    # On an older database it changes nothing; its free pages are reused for new rows.
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # WAL lets readers (the CLI) run beside the writer; FULL fsyncs the WAL on every commit,
    # so a 250 reply after commit survives power loss, not only kill -9.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_engine(url: str, *, flush_commits: bool = True,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, **kwargs: Any) -> Engine:
    """An engine with mailrelay's connection settings.

    `flush_commits=False` lets an SQLite commit return before it is flushed to disk
    (synchronous=NORMAL in WAL mode): the WAL is in the operating system's hands, so it
    survives any process's crash, not a power cut. For the delivery workers' claims and
    outcomes, whose commits would otherwise hold the one write lock the SMTP process needs.
    PostgreSQL ignores it: its asynchronous commit (synchronous_commit=off) waits in the
    server's own memory, and a crash of the database server alone loses it; a lost outcome
    left a recipient already sent leased to a live worker that took it for recorded (sent
    again when that worker stopped), and there is no shared write lock to spare there.
    `connect_timeout` bounds each PostgreSQL connection attempt (whole seconds; libpq treats
    less than 2 as 2); `connect_args` given by the caller win over it.
    """
    url = normalize_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        sa.event.listen(engine, "connect", functools.partial(
            _sqlite_pragmas, synchronous="FULL" if flush_commits else "NORMAL"))
        return engine
    connect_args = {"connect_timeout": connect_timeout_seconds(connect_timeout),
                    **kwargs.pop("connect_args", {})}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
