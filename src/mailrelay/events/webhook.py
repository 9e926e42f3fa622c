"""The event webhook dispatcher: posts the outbox (events.outbox) to each account's URL.

One asyncio task per delivery process claims due events every `POLL` seconds and starts one
posting task per account (at most `max_concurrent` at once). An account's task POSTs its events
as signed JSON arrays, oldest first, and stops at the first failure; the failed events are
retried with backoff (retry_first doubling to retry_max) until they are `max_age` old. Nothing
the SMTP sessions or delivery wait for is ever awaited on a receiver: a slow or dead webhook
only holds its own task.

Security: posts to URLs set by the operator (`mailrelay account webhook`); redirects are not
followed, proxies from the environment are not used, the response body is never read, and log
lines name the URL without its query string or user info, and never the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import urllib.parse
from collections.abc import Callable

import httpx

from mailrelay import __version__
from mailrelay.events import outbox, signing
from mailrelay.events.payload import encode_batch
from mailrelay.settings import WebhookSettings
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store.health import is_unavailable

log = logging.getLogger("mailrelay.webhook")

POLL = 0.5  # seconds between claims when there was nothing to do
BATCHES_PER_CLAIM = 10  # POSTs one account's task makes before the next claim


def backoff(attempts: int, settings: WebhookSettings) -> float:
    """Delay before retry number `attempts` (1 = first retry)."""
    return float(min(settings.retry_first * 2 ** max(attempts - 1, 0), settings.retry_max))


def redact(url: str) -> str:
    """The URL for a log line: scheme, host, port and path only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookDispatcher:
    """Start in a process that runs delivery; `stop` waits for posts in flight (bounded)."""

    def __init__(self, settings: WebhookSettings, writer: SpoolWriter, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.writer = writer
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=settings.timeout, follow_redirects=False, trust_env=False, transport=transport,
            headers={"User-Agent": f"mailrelay/{__version__}", "Content-Type": "application/json"})
        self._busy: dict[int, asyncio.Task[None]] = {}  # account id -> its posting task
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.posts = 0  # successful POSTs, for tests and stats

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming; posts in flight get `timeout`, then are cancelled (their events are
        posted again after their lease: at least once)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
        if self._busy:
            _, pending = await asyncio.wait(set(self._busy.values()), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self._client.aclose()

    async def _run(self) -> None:
        s = self.settings
        while not self._stopping:
            self._wake.clear()
            room = s.max_concurrent - len(self._busy)
            claimed: outbox.Claimed | None = None
            if room > 0:
                now = self._clock()
                try:
                    claimed = await self.writer.run(functools.partial(
                        outbox.claim, now=now, lease_until=now + s.timeout * (BATCHES_PER_CLAIM + 1),
                        max_events=min(s.batch_size * BATCHES_PER_CLAIM * room, 5000), max_accounts=room,
                        per_account=s.batch_size * BATCHES_PER_CLAIM, max_age=s.max_age,
                        busy=frozenset(self._busy)))
                except Exception as exc:
                    if not is_unavailable(exc):  # an outage is logged once, by the writer
                        log.error("webhook outbox: claiming events failed: %s", exc)
            if claimed is not None:
                if claimed.expired:
                    log.warning("webhook outbox: gave up on %d events older than %gs", claimed.expired, s.max_age)
                for batch in claimed.batches:
                    task = asyncio.create_task(self._post_account(batch), name=f"webhook-{batch.account_id}")
                    self._busy[batch.account_id] = task
                    task.add_done_callback(functools.partial(self._done, batch.account_id))
            if claimed is None or not claimed.batches:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
            else:
                await asyncio.sleep(0)

    def _done(self, account_id: int, task: asyncio.Task[None]) -> None:
        self._busy.pop(account_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook of account %d: %s", account_id, task.exception())
        self._wake.set()  # room for another account, or more of this one

    async def _post_account(self, batch: outbox.AccountBatch) -> None:
        """POST the account's events in order; stop at the first failure."""
        size = self.settings.batch_size
        sent: list[int] = []
        failed: list[int] = []
        for start in range(0, len(batch.rows), size):
            rows = batch.rows[start:start + size]
            if failed:
                failed.extend(r.id for r in rows)  # never past a failed one: order per account
                continue
            error = await self._post(batch.url, batch.secret, encode_batch(rows))
            if error is None:
                sent.extend(r.id for r in rows)
                self.posts += 1
                continue
            failed.extend(r.id for r in rows)
            attempts = batch.attempts + 1
            oldest = min(r.at for r in batch.rows[start:])
            if self._clock() - oldest >= self.settings.max_age:
                log.warning("webhook %s of account %d: %s; giving up on %d events older than %gs",
                            redact(batch.url), batch.account_id, error,
                            len(batch.rows) - start, self.settings.max_age)
            else:
                log.warning("webhook %s of account %d: %s; %d events retried in %gs (attempt %d)",
                            redact(batch.url), batch.account_id, error, len(batch.rows) - start,
                            backoff(attempts, self.settings), attempts)
        retry_at = None
        if failed:
            now = self._clock()
            too_old = now - min(r.at for r in batch.rows if r.id in set(failed)) >= self.settings.max_age
            retry_at = None if too_old else now + backoff(batch.attempts + 1, self.settings)
        await self.writer.run(functools.partial(outbox.settle, sent=sent, failed=failed, retry_at=retry_at))

    async def _post(self, url: str, secret: str, body: bytes) -> str | None:
        """One signed POST; None on a 2xx answer, else why it failed (for the log)."""
        timestamp = int(self._clock())
        headers = {signing.TIMESTAMP_HEADER: str(timestamp),
                   signing.SIGNATURE_HEADER: signing.sign(secret, timestamp, body)}
        try:
            # httpx's timeout bounds each network step; this bounds the whole POST, so a
            # receiver trickling its answer cannot outlast the claim's lease (and get the
            # events twice, from another dispatcher).
            async with asyncio.timeout(self.settings.timeout):
                # Streamed and closed unread: a receiver's answer body is of no use to us.
                async with self._client.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
        except (httpx.TimeoutException, TimeoutError):
            return f"no answer in {self.settings.timeout:g}s"
        except (httpx.HTTPError, OSError, ValueError) as exc:
            text = str(exc).replace(url, redact(url))[:200] or "connection failed"
            return f"{type(exc).__name__}: {text}"
        if 200 <= status < 300:
            return None
        return f"answered HTTP {status}"
