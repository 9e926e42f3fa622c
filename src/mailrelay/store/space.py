"""Free space where the SQLite database lives, read at most once a second.

Postfix's smtpd refuses MAIL with 452 4.3.1 when its queue file system has less than
queue_minfree bytes free (plus the SIZE= declared): the client learns it before sending the
message, not at the end of DATA. `DiskSpace` answers that question for the policies; it logs
one line when space runs low and one when it is back, never one per refused MAIL.

PostgreSQL keeps its data on the database server's disk, which a client cannot measure:
`for_url` returns None there and nothing is checked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger("mailrelay.store")

READ_EVERY = 1.0  # seconds a reading is reused: MAIL commands come by thousands a second


class DiskSpace:
    """Whether `directory`'s file system has `min_free` bytes (plus a message) to spare."""

    def __init__(self, directory: Path, *, min_free: int,
                 clock: Callable[[], float] = time.monotonic,
                 statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> None:
        self.directory = directory
        self.min_free = min_free
        self._clock = clock
        self._statvfs = statvfs
        self._free: int | None = None  # None: unknown (the reading failed)
        self._read_at = -READ_EVERY
        self._low = False
        self._unreadable = False

    def free(self) -> int | None:
        """Bytes an unprivileged writer may still use (f_bavail), as of the last second."""
        now = self._clock()
        if now - self._read_at >= READ_EVERY:
            self._read_at = now
            try:
                st = self._statvfs(self.directory)
            except OSError as exc:
                if not self._unreadable:
                    log.warning("cannot read the free space of %s: %s; not checking it",
                                self.directory, exc)
                self._unreadable, self._free = True, None
            else:
                self._unreadable, self._free = False, st.f_bavail * st.f_frsize
                self._note(self._free)
        return self._free

    def room_for(self, size: int) -> bool:
        """True unless fewer than `min_free + size` bytes are free. An unreadable file system
        counts as room: the commit at the end of DATA still fails safely (451) if it is full."""
        free = self.free()
        return free is None or free >= self.min_free + size

    def _note(self, free: int) -> None:
        low = free < self.min_free
        if low != self._low:
            self._low = low
            if low:
                log.error("queue storage low: %d bytes free in %s, below storage.min_free (%d); "
                          "MAIL is answered 452 4.3.1 until there is room", free, self.directory,
                          self.min_free)
            else:
                log.warning("queue storage back above storage.min_free: %d bytes free in %s",
                            free, self.directory)


def for_url(url: str, *, min_free: int) -> DiskSpace | None:
    """The check for the database at `url`: SQLite files only, and only when `min_free` > 0."""
    if min_free <= 0:
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return DiskSpace(Path(parsed.database).resolve().parent, min_free=min_free)
