"""The outbound HTTP poster both webhooks use: claim due work, POST it, settle it.

A `Poster` runs one asyncio task that asks for due jobs every `POLL` seconds (or
when woken), at most `max_concurrent` in flight, and runs each job in its own task. A job
POSTs through `post`, which bounds the whole request (not only each network step) by
`timeout`, so a receiver trickling its answer cannot outlast the claim's lease and get the
same work twice from another dispatcher. What a job is, how it is claimed, built and settled
is the subclass's: the event webhook (events.webhook) and the parse webhook (inbound.dispatch).

Security: redirects are not followed, proxies from the environment are not used, an answer's
body is never read, and log lines name a URL through `redact` (no user info, no query).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import socket
import time
import urllib.parse
from collections.abc import AsyncIterable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpcore
import httpx

from mailrelay import __version__
from mailrelay.core.ips import is_local_name, is_public_text
from mailrelay.store.health import is_unavailable

POLL = 0.5  # seconds between claims when there was nothing to do

Job = TypeVar("Job")
Key = TypeVar("Key", bound=Hashable)


def redact(url: str) -> str:
    """A webhook URL for a log line: scheme, host, port and path only (user info and query
    may carry a token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one POST ended: an HTTP status, or no answer (`timed_out`, or `error`)."""

    status: int | None = None
    timed_out: bool = False  # no answer within the whole-request time bound
    error: Exception | None = None  # httpx.HTTPError, OSError or ValueError before an answer
    seconds: float = 0.0  # from the start of the POST to its status line (or its failure)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Poster(abc.ABC, Generic[Job, Key]):
    """The claim → POST → settle loop. A dispatcher subclasses it and gives:

    - `_claim(room, busy)`: up to `room` due jobs, none whose key is in `busy` (keys in flight);
      raising is logged with `claim_failed` (a format for the exception; a database outage
      is logged by the spool writer alone);
    - `_key(job)`: names the job's task and is what `busy` holds;
    - `_send(job)`: builds, `post`s and settles one job;
    - `_crashed(job, exc)`: logs a `_send` that raised.

    `stop` waits for jobs in flight (bounded), then cancels them: their work is claimed again
    after its lease, so a receiver gets it at least once.
    """

    def __init__(self, *, name: str, log: logging.Logger, timeout: float, max_concurrent: int,
                 headers: dict[str, str], transport: httpx.AsyncBaseTransport | None,
                 claim_failed: str, allow_private: bool = False) -> None:
        self.name = name
        self.allow_private = allow_private  # [webhooks] allow_private_targets
        self.timeout = timeout
        self.max_concurrent = max_concurrent
        self._log = log
        self._claim_failed = claim_failed
        if transport is None and not allow_private:
            transport = public_transport()
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, transport=transport,
            headers={"User-Agent": f"mailrelay/{__version__}", **headers})
        self._busy: dict[asyncio.Task[None], Key] = {}  # job task -> its key
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.posts = 0  # 2xx answers, for tests and stats

    @abc.abstractmethod
    async def _claim(self, room: int, busy: frozenset[Key]) -> Sequence[Job]: ...

    @abc.abstractmethod
    def _key(self, job: Job) -> Key: ...

    @abc.abstractmethod
    async def _send(self, job: Job) -> None: ...

    @abc.abstractmethod
    def _crashed(self, job: Job, exc: BaseException) -> None: ...

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-dispatcher")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming; jobs in flight get `timeout`, then are cancelled (their work is
        claimed again after its lease: posted at least once)."""
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

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            room = self.max_concurrent - len(self._busy)
            jobs: Sequence[Job] = ()
            if room > 0:
                try:
                    jobs = await self._claim(room, frozenset(self._busy.values()))
                except Exception as exc:
                    if not is_unavailable(exc):  # an outage is logged once, by the writer
                        self._log.error(self._claim_failed, exc)
            for job in jobs:
                key = self._key(job)
                task = asyncio.create_task(self._send(job), name=f"{self.name}-{key}")
                self._busy[task] = key
                task.add_done_callback(functools.partial(self._done, job))
            if not jobs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
            else:
                await asyncio.sleep(0)

    def _done(self, job: Job, task: asyncio.Task[None]) -> None:
        self._busy.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._crashed(job, exc)
        self._wake.set()  # room for another job

    async def post(self, url: str, content: bytes | AsyncIterable[bytes], headers: dict[str, str]) -> Answer:
        """One POST, its answer streamed and closed unread (its body is of no use to us)."""
        started = time.monotonic()
        try:
            # httpx's timeout bounds each network step; this bounds the whole POST, which must
            # end well within its claim's lease.
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("POST", url, content=content, headers=headers) as response:
                    status = response.status_code
        except (httpx.TimeoutException, TimeoutError):
            return Answer(timed_out=True, seconds=time.monotonic() - started)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return Answer(error=exc, seconds=time.monotonic() - started)
        answer = Answer(status, seconds=time.monotonic() - started)
        if answer.ok:
            self.posts += 1
        return answer


class _PublicOnly(httpcore.AsyncNetworkBackend):
    """Opens connections to public addresses only (core.ips). The host is resolved here, every
    address it has is checked, and the connection goes to a checked address itself (TLS still
    verifies the host name), so a DNS answer that changes between a check and the connect (DNS
    rebinding) cannot reach the network behind the server."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        if is_local_name(host):
            raise httpcore.ConnectError(f"{host} is an internal address ([webhooks] allow_private_targets is off)")
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not is_public_text(address):
                raise httpcore.ConnectError(f"{host} resolves to the internal address {address} "
                                            "([webhooks] allow_private_targets is off)")
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not posted to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def public_transport() -> httpx.AsyncHTTPTransport:
    """An httpx transport that connects to public addresses only (see _PublicOnly)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    pool = transport._pool  # httpx 0.28.1 (pinned): the connection pool; its backend opens sockets
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    pool._network_backend = _PublicOnly(pool._network_backend)
    return transport
