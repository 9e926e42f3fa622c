"""Servers for the wire.SMTPClient tests (test_wire*.py): aiosmtpd with a recording handler, and
scripted peers that answer from a table and log every byte; TLS from a trustme CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trustme
import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailrelay.delivery.wire import SMTPClient
from tests.support import ports

T = TypeVar("T")
HOST = "127.0.0.1"
CA = trustme.CA()
CERT = CA.issue_cert("localhost", HOST)
MESSAGE = b"Subject: hi\n\n.leading dot\nbare LF\r\n..two dots\rbare CR\x00NUL"
# What a server stores after unstuffing MESSAGE: CRLF everywhere, no NUL, a final CRLF.
STORED = b"Subject: hi\r\n\r\n.leading dot\r\nbare LF\r\n..two dots\r\nbare CRNUL\r\n"


def run(coro: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def server_tls(cert: trustme.LeafCert = CERT) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    CA.configure_trust(ctx)
    return ctx


async def connect(port: int, timeout: float = 5.0) -> SMTPClient:
    client, greeting = await SMTPClient.connect(HOST, port, connect_timeout=timeout, command_timeout=timeout)
    assert greeting.code == 220, greeting
    return client


# --- aiosmtpd -------------------------------------------------------------------------------


@dataclass
class Delivered:
    sender: str | None
    rcpts: list[str]
    content: bytes | None


class Sink:
    """aiosmtpd handler: records what it delivers; refuses listed recipients or every sender."""

    def __init__(self, *, pipelining: bool = True, refuse: Sequence[str] = (), refuse_mail: bool = False) -> None:
        self.pipelining = pipelining
        self.refuse = set(refuse)
        self.refuse_mail = refuse_mail
        self.delivered: list[Delivered] = []
        self.rcpts_seen: list[str] = []
        self.rsets = 0

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd handles pipelined commands but does not advertise it
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.refuse_mail:
            return "550 5.7.1 sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpts_seen.append(address)
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.rsets += 1
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"


class _Controller(Controller):
    """Listens on port 0: learns the real port before aiosmtpd's start-up probe connects."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@contextmanager
def smtpd(handler: Sink, **smtp_options: Any) -> Iterator[int]:
    controller = _Controller(handler, hostname=HOST, port=0, **smtp_options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alice", b"s3cret")
    return AuthResult(success=ok, handled=False)


# --- scripted peers -------------------------------------------------------------------------

EHLO_PIPELINING = b"250-raw.test\r\n250-SIZE 1000000\r\n250 PIPELINING\r\n"
EHLO_PLAIN = b"250-raw.test\r\n250 SIZE 1000000\r\n"
CLOSE = b"<close>"
DEFAULT_ANSWERS = {
    b"EHLO": EHLO_PIPELINING, b"HELO": b"250 raw.test\r\n", b"MAIL": b"250 2.1.0 ok\r\n",
    b"RCPT": b"250 2.1.5 ok\r\n", b"DATA": b"354 go on\r\n", b"RSET": b"250 2.0.0 ok\r\n",
    b"QUIT": b"221 2.0.0 bye\r\n", b".": b"250 2.0.0 queued\r\n",
}


class Peer:
    """A scripted SMTP server: answers each command line, or else its verb, from a table, and logs
    every chunk read and written.

    An answer of None says nothing; CLOSE closes the connection. After a 354 it reads a body up to
    CRLF "." CRLF and answers ".".
    """

    def __init__(self, answers: dict[bytes, bytes | None] | None = None,
                 greeting: bytes = b"220 raw.test ESMTP\r\n") -> None:
        self.answers = {**DEFAULT_ANSWERS, **(answers or {})}
        self.greeting = greeting
        self.log: list[tuple[str, bytes]] = []
        self.lines: list[bytes] = []
        self.bodies: list[bytes] = []
        self.peers: list[str] = []

    def answer(self, line: bytes) -> bytes | None:
        if line in self.answers:
            return self.answers[line]
        return self.answers.get(line.split(b" ", 1)[0].upper(), b"500 5.5.1 what?\r\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[0])
        try:
            await self._converse(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        self.log.append(("send", data))
        writer.write(data)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.greeting:
            self._send(writer, self.greeting)
        buf = b""
        in_data = False
        while chunk := await reader.read(1 << 16):
            self.log.append(("recv", chunk))
            buf += chunk
            while True:
                if in_data:
                    framed = b"\r\n" + buf
                    end = framed.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    self.bodies.append(framed[2:end + 2])
                    buf = framed[end + 5:]
                    in_data, line = False, b"."
                else:
                    end = buf.find(b"\r\n")
                    if end < 0:
                        break
                    line, buf = buf[:end], buf[end + 2:]
                    self.lines.append(line)
                reply = self.answer(line)
                if reply == CLOSE:
                    return
                if reply is not None:
                    self._send(writer, reply)
                    in_data = reply.startswith(b"354")


@asynccontextmanager
async def serving(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
                  sock: socket.socket | None = None) -> AsyncIterator[int]:
    """Serve `handle` on loopback; afterwards let the conversations see the client's close and end."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await handle(reader, writer)

    if sock is None:
        server = await asyncio.start_server(tracked, HOST, 0)
    else:
        server = await asyncio.start_server(tracked, sock=sock)
    async with server:
        yield server.sockets[0].getsockname()[1]
    if tasks:
        await asyncio.wait(tasks, timeout=2)


def free_port() -> int:
    return ports.free_port(HOST)
