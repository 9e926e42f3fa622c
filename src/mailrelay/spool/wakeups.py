"""Waking the delivery of every node when mail is queued, on PostgreSQL: LISTEN/NOTIFY.

Within one node a pipe wakes the delivery workers (cli.workers); another node hears of new mail
only at its next poll (`delivery.poll_seconds`). On PostgreSQL the transaction that queues mail
also sends one `NOTIFY mailrelay_queue` (`notify`), delivered to listeners only if it commits,
and each delivery process listens on a connection of its own (`QueueListener`) and claims at
once. The notification is a hint, never the only way: polling goes on, so a notification lost
while a listener reconnects delays mail by one poll at most. The payload is the schema the queue
lives in, so installations sharing one database in different schemas do not wake each other.

Security: the listening connection uses the storage URL's credentials and only LISTENs; a
payload is compared, never executed or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import Connection, Engine

from mailrelay.store.db import connect_timeout_seconds

log = logging.getLogger("mailrelay.spool")

CHANNEL = "mailrelay_queue"
APPLICATION_NAME = "mailrelay listener"  # how the connection shows in pg_stat_activity
DEBOUNCE = 0.02  # seconds: notifications closer than this wake the claim loop once
PROBE_SECONDS = 30.0  # a silent connection is checked this often (one that died without a word)
PROBE_TIMEOUT = 10.0  # seconds the check may take before the connection is given up
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between tries to listen again, doubling


def notify(conn: Connection) -> None:
    """Tell every listening node that mail was queued, when `conn`'s transaction commits
    (PostgreSQL; several in one transaction reach listeners as one)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_notify('{CHANNEL}', current_schema())")


class QueueListener:
    """LISTENs for `notify` and calls `wake` (on the event loop), at most once per DEBOUNCE;
    reconnects with backoff when the connection is lost."""

    def __init__(self, engine: Engine, wake: Callable[[], None], *, connect_timeout: float = 10.0) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout = connect_timeout_seconds(connect_timeout)
        self._wake = wake
        self._task: asyncio.Task[None] | None = None
        self._last_wake = 0.0  # monotonic
        self._trailing: asyncio.TimerHandle | None = None
        self.listening = asyncio.Event()  # set while a LISTEN is in place (tests wait for it)
        self.backend_pid: int | None = None  # the server process listening (pg_stat_activity)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="queue-listener")

    async def stop(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self) -> None:
        """Wake now, or once at the end of the debounce window if a wake-up was that recent."""
        if self._trailing is not None:
            return
        wait = self._last_wake + DEBOUNCE - time.monotonic()
        if wait <= 0:
            self._fire()
        else:
            self._trailing = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._trailing = None
        self._last_wake = time.monotonic()
        self._wake()

    async def _run(self) -> None:
        import psycopg  # here: PostgreSQL's driver costs every command that imports this ~0.1 s

        delay = RETRY_FIRST
        lost_since: float | None = None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=self._connect_timeout,
                        application_name=APPLICATION_NAME,
                        # a server gone without closing the connection is noticed within ~25 s
                        keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3) as conn:
                    schema = (await (await conn.execute("SELECT current_schema()")).fetchone() or ("",))[0]
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    if lost_since is not None:
                        log.warning("listening for new mail again (after %.1f s)", time.monotonic() - lost_since)
                        lost_since = None
                    delay = RETRY_FIRST
                    self._notified()  # mail queued while we were not listening
                    while True:
                        async for note in conn.notifies(timeout=PROBE_SECONDS):
                            if note.payload == schema:
                                self._notified()
                        # Raises, or times out, if the connection died silently.
                        await asyncio.wait_for(conn.execute("SELECT 1"), PROBE_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: listen again later; polling goes on meanwhile
                self.listening.clear()
                if lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("not listening for new mail (%s); polling until it is back",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX)
