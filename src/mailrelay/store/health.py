"""Is the database there? One log line when it goes away and one when it is back.

During an outage every session, claim loop and webhook poller fails at once, many times a
second; logging each (with a traceback) buried the one line that matters. The writer of each
process reports its failures here, and callers skip their own line for `StorageUnavailable`.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy.exc

log = logging.getLogger("mailrelay.store")


class StorageUnavailable(Exception):
    """The database could not be reached or written (down, unreachable, disk full, locked):
    the work may be retried as it is. Raised in place of the driver's error."""


def is_unavailable(exc: BaseException) -> bool:
    """A failure of the database as a whole, not of the statement: connection refused or
    lost, server shutting down, disk full, lock timeout (all OperationalError on SQLite and
    psycopg), or a connection the pool found dead."""
    if isinstance(exc, StorageUnavailable | sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


class StorageHealth:
    """Outage bookkeeping of one process: logs the changes of state, counts in between."""

    def __init__(self) -> None:
        self.down_since: float | None = None  # monotonic
        self.failed_writes = 0
        self.refused_messages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, *, messages: int = 0) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.failed_writes = 0
            self.refused_messages = 0
            log.error("database unavailable: %s; new mail is refused with 451 and delivery waits until it "
                      "is back (one line when it is)", describe(exc))
        self.failed_writes += 1
        self.refused_messages += messages

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        took = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("database back after %.1f s; %d messages refused and %d writes failed meanwhile",
                    took, self.refused_messages, self.failed_writes)


def describe(exc: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig if orig is not None else exc).__name__}: {text[0] if text else ''}"[:300]
