"""The inbound parse dispatcher: POSTs received mail to its domain's webhook (Inbound Parse).

Per delivery process, a poster (events.poster) claims due `inbound` recipients (inbound.claims)
and runs one task per message and domain, at most `max_concurrent` at once.
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
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx

from mailrelay.core.status import EXPIRED, INBOUND
from mailrelay.events.poster import Poster, redact
from mailrelay.inbound import claims, parse
from mailrelay.settings import InboundSettings
from mailrelay.spool.nodes import INBOUND_SUFFIX
from mailrelay.spool.schedule import backoff
from mailrelay.spool.writer import SpoolWriter

log = logging.getLogger("mailrelay.inbound")


class InboundDispatcher(Poster[claims.InboundPost, str]):
    """Start in a process that runs delivery; `stop` waits for posts in flight (bounded), then
    cancels them (their recipients are due again after their lease: posted at least once)."""

    def __init__(self, settings: InboundSettings, writer: SpoolWriter, *, node: str,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time, allow_private: bool = False) -> None:
        super().__init__(name="inbound", log=log, timeout=settings.timeout,
                         max_concurrent=settings.max_concurrent, headers={}, transport=transport,
                         claim_failed="inbound webhook: claiming messages failed: %s",
                         allow_private=allow_private)
        self.settings = settings
        self.writer = writer
        self.node = f"{node}{INBOUND_SUFFIX}"
        self._clock = clock

    def _next_attempt(self, attempts_before: int) -> float:
        s = self.settings
        return backoff(attempts_before, first=s.retry_first, cap=s.retry_max)

    async def _claim(self, room: int, busy: frozenset[str]) -> list[claims.InboundPost]:
        """`busy` is not needed: a message's recipients in flight are leased, so not due."""
        s = self.settings
        # A lease outlasts the POST (and the form building before it) with room to spare.
        return await self.writer.run(functools.partial(
            claims.claim, node=self.node, now=self._clock(), limit=room, lease_seconds=s.timeout * 2 + 30.0,
            next_attempt=self._next_attempt))

    def _key(self, post: claims.InboundPost) -> str:
        return post.message_id

    def _crashed(self, post: claims.InboundPost, exc: BaseException) -> None:
        log.error("inbound webhook: %s", exc)

    async def _send(self, post: claims.InboundPost) -> None:
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
        if error is None and unparsed:
            log.info("inbound webhook %s: message %s posted raw (%s)", redact(post.url), post.message_id,
                     unparsed)
        status = await self.writer.run(functools.partial(
            claims.settle, post=post, node=self.node, now=self._clock(), error=error, reply=reply,
            max_age=self.settings.max_age))
        if status == EXPIRED:
            log.warning("inbound webhook %s: %s; message %s to %s given up after %gs",
                        redact(post.url), reply, post.message_id, ", ".join(rcpts), self.settings.max_age)
        elif status == INBOUND:
            log.info("inbound webhook %s: %s; message %s retried in %gs (attempt %d)", redact(post.url), reply,
                     post.message_id, self._next_attempt(post.attempt - 1), post.attempt)

    async def _post(self, url: str, body: parse.Encoded) -> tuple[str | None, str]:
        """One POST: (None, "HTTP 200") on a 2xx answer, else (why, the same for last_reply)."""
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body.chunks:
                yield chunk

        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        answer = await self.post(url, chunks(), headers)
        if answer.timed_out:
            return "timeout", f"timed out after {self.settings.timeout:g}s"
        if isinstance(answer.error, httpx.ConnectError):
            reason = "connection refused" if _refused(answer.error) else \
                f"connection failed: {_clean(str(answer.error), url)}"
            return "connect", reason
        if answer.error is not None:
            return "error", f"{type(answer.error).__name__}: {_clean(str(answer.error), url)}"
        if answer.ok:
            return None, f"HTTP {answer.status}"
        return "status", f"HTTP {answer.status}"


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
