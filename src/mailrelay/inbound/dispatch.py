"""The inbound parse dispatcher: POSTs received mail to its domain's webhook (Inbound Parse).

One asyncio task per delivery process claims due `inbound` recipients every `POLL` seconds
(inbound.claims) and starts one task per message and domain, at most `max_concurrent` at once.
Each builds the form off the event loop (a thread: parsing a 30 MB message is CPU work), POSTs
it once, and records the outcome: 2xx → `posted`; anything else → retried with backoff
(retry_first doubling to retry_max) until the message is `max_age` old, then `expired`. The
SMTP sessions and the delivery agent never wait on a receiver: a dead webhook holds only its
own tasks.

Security: posts mail to URLs set by the domain's owner; redirects are not followed, proxies
from the environment are not used, the answer's body is never read, and log lines name the URL
without its query string or user info (which may carry a token).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx

from mailrelay import __version__
from mailrelay.events.webhook import redact
from mailrelay.inbound import claims, parse
from mailrelay.settings import InboundSettings
from mailrelay.spool.nodes import INBOUND_SUFFIX
from mailrelay.spool.schedule import backoff
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store.health import is_unavailable

log = logging.getLogger("mailrelay.inbound")

POLL = 0.5  # seconds between claims when there was nothing to do


class InboundDispatcher:
    """Start in a process that runs delivery; `stop` waits for posts in flight (bounded)."""

    def __init__(self, settings: InboundSettings, writer: SpoolWriter, *, node: str,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.writer = writer
        self.node = f"{node}{INBOUND_SUFFIX}"
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=settings.timeout, follow_redirects=False, trust_env=False, transport=transport,
            headers={"User-Agent": f"mailrelay/{__version__}"})
        self._busy: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.posts = 0  # successful POSTs, for tests and stats

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbound-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming; posts in flight get `timeout`, then are cancelled (their recipients
        are due again after their lease: posted at least once)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
        if self._busy:
            _, pending = await asyncio.wait(set(self._busy), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self._client.aclose()

    def _next_attempt(self, attempts_before: int) -> float:
        s = self.settings
        return backoff(attempts_before, first=s.retry_first, cap=s.retry_max)

    async def _run(self) -> None:
        s = self.settings
        # A lease outlasts the POST (and the form building before it) with room to spare.
        lease = s.timeout * 2 + 30.0
        while not self._stopping:
            self._wake.clear()
            room = s.max_concurrent - len(self._busy)
            posts: list[claims.InboundPost] = []
            if room > 0:
                try:
                    posts = await self.writer.run(functools.partial(
                        claims.claim, node=self.node, now=self._clock(), limit=room, lease_seconds=lease,
                        next_attempt=self._next_attempt))
                except Exception as exc:
                    if not is_unavailable(exc):  # an outage is logged once, by the writer
                        log.error("inbound webhook: claiming messages failed: %s", exc)
            for post in posts:
                task = asyncio.create_task(self._deliver(post), name=f"inbound-{post.message_id}")
                self._busy.add(task)
                task.add_done_callback(self._done)
            if not posts:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
            else:
                await asyncio.sleep(0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._busy.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("inbound webhook: %s", task.exception())
        self._wake.set()

    async def _deliver(self, post: claims.InboundPost) -> None:
        """Build the form, POST it once, record what happened."""
        rcpts = [addr for _, addr in post.recipients]
        error: str | None
        unparsed: str | None = None  # why the message was sent raw
        try:
            form = await asyncio.to_thread(parse.build_form, post.data, mail_from=post.mail_from, rcpts=rcpts,
                                           auth=post.auth, client_ip=post.client_ip, raw_mode=post.raw_mode)
            body = parse.encode(form)
        except Exception as exc:  # a bug of ours (a message the email package chokes on is sent
            # raw): retried, then expired; never raised past settle, or it would be claimed forever
            error, reply = "form", f"could not build the form: {type(exc).__name__}: {str(exc)[:200]}"
        else:
            unparsed = form.unparsed
            del form
            error, reply = await self._post(post.url, body)
        if error is None:
            self.posts += 1
            if unparsed:
                log.info("inbound webhook %s: message %s posted raw (%s)", redact(post.url), post.message_id,
                         unparsed)
        status = await self.writer.run(functools.partial(
            claims.settle, post=post, node=self.node, now=self._clock(), error=error, reply=reply,
            max_age=self.settings.max_age))
        if status == claims.EXPIRED:
            log.warning("inbound webhook %s: %s; message %s to %s given up after %gs",
                        redact(post.url), reply, post.message_id, ", ".join(rcpts), self.settings.max_age)
        elif status == claims.INBOUND:
            log.info("inbound webhook %s: %s; message %s retried in %gs (attempt %d)", redact(post.url), reply,
                     post.message_id, self._next_attempt(post.attempt - 1), post.attempt)

    async def _post(self, url: str, body: parse.Encoded) -> tuple[str | None, str]:
        """One POST: (None, "HTTP 200") on a 2xx answer, else (why, the same for last_reply)."""
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body.chunks:
                yield chunk

        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        try:
            # Streamed and closed unread: the answer's body is of no use to us. httpx's timeout
            # bounds each network step; this bounds the whole POST, which must end well within
            # its lease, or a second claim would post the message again meanwhile.
            async with asyncio.timeout(self.settings.timeout):
                async with self._client.stream("POST", url, content=chunks(), headers=headers) as response:
                    status = response.status_code
        except (httpx.TimeoutException, TimeoutError):
            return "timeout", f"timed out after {self.settings.timeout:g}s"
        except httpx.ConnectError as exc:
            reason = "connection refused" if _refused(exc) else f"connection failed: {_clean(str(exc), url)}"
            return "connect", reason
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return "error", f"{type(exc).__name__}: {_clean(str(exc), url)}"
        if 200 <= status < 300:
            return None, f"HTTP {status}"
        return "status", f"HTTP {status}"


def _clean(text: str, url: str) -> str:
    return text.replace(url, redact(url))[:200] or "no detail"


def _refused(exc: BaseException) -> bool:
    """A connection refused somewhere in the chain (httpx says only "All connection attempts failed")."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False
