"""The event webhook dispatcher: posts the outbox (events.outbox) to each account's URL.

Per delivery process, a poster (events.poster) claims due events and runs one posting task per
account (at most `max_concurrent` at once). An account's task POSTs its events as signed JSON
arrays (events.signing: ours always, SendGrid's too when the account turned it on), oldest
first, and stops at the first failure; the failed events are retried with backoff
(spool.schedule: retry_first doubling to retry_max) until they are `max_age` old.
Each POST (status, time to answer, why it failed) goes into the account's last POSTs
(events.postlog) in the transaction that settles its events.
Nothing the SMTP sessions or delivery wait for is ever awaited on a receiver: a slow or dead
webhook only holds its own task.

Security: posts to URLs set by the operator (`mailrelay account webhook`) or by the account
itself through the HTTP API (so private and loopback destinations are not yet refused: a known
gap); redirects are not followed, proxies from the environment are not used, the response body
is never read, and log lines name the URL without its query string or user info, and never the
secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import httpx
from sqlalchemy.engine import Connection

from mailrelay import __version__, metrics
from mailrelay.core.status import EV_PROCESSED
from mailrelay.events import outbox, postlog, signing
from mailrelay.events.payload import EventRow, encode_batch
from mailrelay.events.poster import Answer, Poster, public_transport, redact
from mailrelay.settings import WebhookSettings
from mailrelay.spool.schedule import backoff
from mailrelay.spool.writer import SpoolWriter

log = logging.getLogger("mailrelay.webhook")

BATCHES_PER_CLAIM = 10  # POSTs one account's task makes before the next claim


def retry_delay(attempt: int, settings: WebhookSettings) -> float:
    """Delay before retry number `attempt` (1 = first retry): the spool's schedule, the
    webhook's numbers."""
    return backoff(max(attempt - 1, 0), first=settings.retry_first, cap=settings.retry_max)


class WebhookDispatcher(Poster[outbox.AccountBatch, int]):
    """Start in a process that runs delivery; `stop` waits for posts in flight (bounded), then
    cancels them (their events are posted again after their lease: at least once)."""

    def __init__(self, settings: WebhookSettings, writer: SpoolWriter, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="webhook", log=log, timeout=settings.timeout,
                         max_concurrent=settings.max_concurrent,
                         headers={"Content-Type": "application/json"}, transport=transport,
                         claim_failed="webhook outbox: claiming events failed: %s",
                         allow_private=settings.allow_private_targets)
        self.settings = settings
        self.writer = writer
        self._clock = clock

    async def _claim(self, room: int, busy: frozenset[int]) -> list[outbox.AccountBatch]:
        s = self.settings
        now = self._clock()
        claimed = await self.writer.run(functools.partial(
            outbox.claim, now=now, lease_until=now + s.timeout * (BATCHES_PER_CLAIM + 1),
            max_events=min(s.batch_size * BATCHES_PER_CLAIM * room, 5000), max_accounts=room,
            per_account=s.batch_size * BATCHES_PER_CLAIM, max_age=s.max_age, busy=busy))
        if claimed.expired:
            log.warning("webhook outbox: gave up on %d events older than %gs", claimed.expired, s.max_age)
        return claimed.batches

    def _key(self, batch: outbox.AccountBatch) -> int:
        return batch.account_id

    def _crashed(self, batch: outbox.AccountBatch, exc: BaseException) -> None:
        log.error("webhook of account %d: %s", batch.account_id, exc)

    async def _send(self, batch: outbox.AccountBatch) -> None:
        """POST the account's events in order; stop at the first failure."""
        size = self.settings.batch_size
        sent: list[int] = []
        failed: list[int] = []
        log_rows: list[postlog.PostRecord] = []
        for start in range(0, len(batch.rows), size):
            rows = batch.rows[start:start + size]
            if failed:
                failed.extend(r.id for r in rows)  # never past a failed one: order per account
                continue
            at = self._clock()
            error, answer = await self._post(batch.url, batch.secret, encode_batch(rows), batch.signing_key)
            log_rows.append(postlog.PostRecord(at=at, url=batch.url, events=len(rows), status=answer.status,
                                               seconds=answer.seconds, error=error))
            metrics.count(metrics.webhook_posts, outcome(answer))
            if error is None:
                sent.extend(r.id for r in rows)
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
                            retry_delay(attempts, self.settings), attempts)
        retry_at = None
        if failed:
            now = self._clock()
            too_old = now - min(r.at for r in batch.rows if r.id in set(failed)) >= self.settings.max_age
            retry_at = None if too_old else now + retry_delay(batch.attempts + 1, self.settings)

        def settle(conn: Connection) -> None:  # the POSTs are logged as their events settle
            outbox.settle(conn, sent=sent, failed=failed, retry_at=retry_at)
            postlog.record(conn, batch.account_id, log_rows)

        await self.writer.run(settle)

    async def _post(self, url: str, secret: str, body: bytes,
                    signing_key: str | None = None) -> tuple[str | None, Answer]:
        """One signed POST: None on a 2xx answer, else why it failed (for the log); and the answer."""
        headers = signing.headers(int(self._clock()), body, secret=secret, signing_key=signing_key)
        answer = await self.post(url, body, headers)
        return failure(answer, url, self.settings.timeout), answer


def failure(answer: Answer, url: str, timeout: float) -> str | None:
    """Why a POST failed, in a line (the URL redacted); None if it was answered 2xx."""
    if answer.timed_out:
        return f"no answer in {timeout:g}s"
    if answer.error is not None:
        text = str(answer.error).replace(url, redact(url))[:200] or "connection failed"
        return f"{type(answer.error).__name__}: {text}"
    if answer.ok:
        return None
    return f"answered HTTP {answer.status}"


def outcome(answer: Answer) -> str:
    """A POST's outcome in a word, for the metrics: ok, timeout, error (no answer), or 2xx..5xx."""
    if answer.timed_out:
        return "timeout"
    if answer.error is not None:
        return "error"
    if answer.ok or answer.status is None:
        return "ok" if answer.ok else "error"
    return f"{answer.status // 100}xx"


def sample_body(now: float) -> bytes:
    """A test POST's body: one `processed` event of no real message, as `encode_batch` makes."""
    row = EventRow(id=0, account_id=None, message_id="test", recipient="example@test.com", type=EV_PROCESSED,
                   detail="", at=now, smtp_id="<test@mailrelay.invalid>", tags='{"category": ["test"]}')
    return encode_batch([row])


async def sample_post(url: str, *, secret: str | None, signing_key: str | None, timeout: float,
                    now: float | None = None, allow_private: bool = False) -> postlog.PostRecord:
    """POST `sample_body` once, signed as the account's events are (the settings' test button):
    its status, time taken and why it failed (None on a 2xx answer; the URL redacted), for
    events.postlog. Same rules as the dispatcher: no redirects, no proxies from the
    environment, the answer's body unread."""
    stamp = time.time() if now is None else now
    body = sample_body(stamp)
    headers = {"Content-Type": "application/json", "User-Agent": f"mailrelay/{__version__}",
               **signing.headers(int(stamp), body, secret=secret, signing_key=signing_key)}
    started = time.monotonic()
    try:
        async with (asyncio.timeout(timeout),
                    httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                      transport=None if allow_private else public_transport()) as client,
                    client.stream("POST", url, content=body, headers=headers) as response):
            answer = Answer(response.status_code, seconds=time.monotonic() - started)
    except (httpx.TimeoutException, TimeoutError):
        answer = Answer(timed_out=True, seconds=time.monotonic() - started)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        answer = Answer(error=exc, seconds=time.monotonic() - started)
    return postlog.PostRecord(at=stamp, url=url, events=1, status=answer.status, seconds=answer.seconds,
                              error=failure(answer, url, timeout), test=True)
