"""Is the database there? One log line when it goes away and one when it is back.

During an outage every session, claim loop and webhook poller fails at once, many times a
second; logging each (with a traceback) buried the one line that matters. The writer of each
process reports its failures here, and callers skip their own line for `StorageUnavailable`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import sqlalchemy
import sqlalchemy.exc

log = logging.getLogger("mailrelay.store")


class StorageUnavailable(ConnectionError):
    """The database could not be reached or written (down, unreachable, disk full, locked):
    the work may be retried as it is. Raised in place of the driver's error."""


# PostgreSQL SQLSTATEs of the server, not the statement (Appendix A): connection exceptions,
# insufficient resources (disk full, out of memory, too many connections), shutting down.
_PG_CLASSES = ("08", "53")
_PG_STATES = ("57P01", "57P02", "57P03")
# SQLite's: the file or its disk, not the statement ("database is locked" is a busy writer
# past busy_timeout: a statement to retry on its own, not an outage).
_SQLITE_TEXTS = ("unable to open database", "disk i/o error", "database or disk is full", "readonly database")


def is_unavailable(exc: BaseException) -> bool:
    """A failure of the database as a whole, not of one statement: connection refused or
    lost, server shutting down, disk full, a connection the pool found dead. A deadlock, a
    serialization failure or a lock timeout is the statement's: retried on its own."""
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        text = str(orig).lower()
        return any(t in text for t in _SQLITE_TEXTS)
    state = getattr(orig, "sqlstate", None)
    if state:
        return state[:2] in _PG_CLASSES or state in _PG_STATES
    return True  # psycopg's connection failures carry no SQLSTATE


# A transaction that lost to another: deadlock victim, serialization failure, lock not
# available. Nothing is wrong with it; run again, it succeeds.
_PG_CONFLICTS = ("40P01", "40001", "55P03")


def is_conflict(exc: BaseException) -> bool:
    """PostgreSQL aborted the transaction for a conflict with another one (run it again)."""
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in _PG_CONFLICTS


class StorageHealth:
    """Outage bookkeeping of one process: logs the changes of state, counts in between.

    Told by the spool writer's thread and by request handlers on the event loop (a read that
    met the outage): a lock keeps the two from both writing the line of one change."""

    def __init__(self) -> None:
        self.down_since: float | None = None  # monotonic
        self.failures = 0
        self.refused_messages = 0
        self._lock = threading.Lock()
        # Called (on the thread that saw it) when the database is back: work paused by the
        # outage resumes at once instead of at its next backoff step.
        self.on_back: list[Callable[[], None]] = []

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, *, messages: int = 0) -> None:
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
                self.failures = 0
                self.refused_messages = 0
            self.failures += 1
            self.refused_messages += messages
        if first:
            log.error("database unavailable: %s; new mail is refused with 451 and delivery waits until it "
                      "is back (one line when it is)", describe(exc))

    def succeeded(self) -> None:
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is None:
                return
            took = time.monotonic() - self.down_since
            self.down_since = None
        log.warning("database back after %.1f s; %d messages refused and %d database calls failed meanwhile",
                    took, self.refused_messages, self.failures)
        for callback in self.on_back:
            callback()


def ping(engine: sqlalchemy.Engine) -> None:
    """One `SELECT 1`: the database answers (raises the driver's error when it does not)."""
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1"))


def describe(exc: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig if orig is not None else exc).__name__}: {text[0] if text else ''}"[:300]
