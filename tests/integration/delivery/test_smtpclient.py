"""SMTPClient over loopback: aiosmtpd servers, scripted misbehaving peers, trustme TLS, body encoding."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import trustme
import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailrelay.delivery.smtpclient import (
    MAX_UNSOLICITED,
    ConnectionLost,
    ProtocolError,
    Reply,
    SMTPClient,
    SMTPClientError,
    encode_body,
)

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


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


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
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- transactions against aiosmtpd ----------------------------------------------------------


def test_pipelined_transactions_reuse_one_connection(loop: str) -> None:
    sink = Sink()

    async def scenario(port: int) -> None:
        client = await connect(port)
        ehlo = await client.ehlo("client.test")
        assert ehlo.code == 250
        assert client.supports("pipelining") and client.extensions["SIZE"] == str(2**25)
        first = await client.transaction("a@x.test", ["b@y.test", "c@y.test"], MESSAGE,
                                         options=[f"SIZE={len(MESSAGE)}"])
        assert first.mail == Reply(250, "2.1.0 Ok")
        assert first.rcpts == [Reply(250, "2.1.5 Ok")] * 2
        assert first.data is not None and first.data.code == 354
        assert first.final == Reply(250, "2.0.0 queued")
        assert client.usable
        second = await client.transaction("", ["d@y.test"], b"second\r\n")
        assert second.final == Reply(250, "2.0.0 queued") and client.usable
        await client.quit()
        assert not client.usable

    with smtpd(sink) as port:
        run(scenario(port), loop)
    assert sink.delivered == [Delivered("a@x.test", ["b@y.test", "c@y.test"], STORED),
                              Delivered("<>", ["d@y.test"], b"second\r\n")]


def test_each_recipient_gets_its_own_reply() -> None:
    sink = Sink(refuse=["bad@y.test"])

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        result = await client.transaction("a@x.test", ["good@y.test", "bad@y.test"], b"hello\r\n")
        assert [r.code for r in result.rcpts] == [250, 550]
        assert result.rcpts[1].text == "5.1.1 no such user"
        assert result.final is not None and result.final.code == 250
        await client.quit()

    with smtpd(sink) as port:
        run(scenario(port))
    assert sink.delivered == [Delivered("a@x.test", ["good@y.test"], b"hello\r\n")]


@pytest.mark.parametrize("pipelining", [True, False])
def test_all_recipients_refused_leaves_connection_reusable(pipelining: bool) -> None:
    sink = Sink(pipelining=pipelining, refuse=["bad1@y.test", "bad2@y.test"])

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        assert client.supports("PIPELINING") is pipelining
        refused = await client.transaction("a@x.test", ["bad1@y.test", "bad2@y.test"], b"lost\r\n")
        assert [r.code for r in refused.rcpts] == [550, 550]
        if pipelining:
            assert refused.data is not None and refused.data.code == 503  # aiosmtpd: need RCPT command
        else:
            assert refused.data is None  # lock-step: DATA is not sent
        assert refused.final is None
        assert client.usable
        ok = await client.transaction("a@x.test", ["good@y.test"], b"kept\r\n")
        assert ok.final is not None and ok.final.code == 250
        await client.quit()

    with smtpd(sink) as port:
        run(scenario(port))
    assert sink.rsets == 1  # ended the refused transaction, so the next MAIL was not nested
    assert sink.delivered == [Delivered("a@x.test", ["good@y.test"], b"kept\r\n")]


def test_refused_mail_in_lock_step_sends_nothing_more() -> None:
    sink = Sink(pipelining=False, refuse_mail=True)

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        result = await client.transaction("a@x.test", ["b@y.test"], b"body\r\n")
        assert result.mail == Reply(550, "5.7.1 sender refused")
        assert (result.rcpts, result.data, result.final) == ([], None, None)
        assert client.usable
        await client.quit()

    with smtpd(sink) as port:
        run(scenario(port))
    assert sink.rcpts_seen == [] and sink.rsets == 0 and sink.delivered == []


def test_utf8_addresses_with_smtputf8() -> None:
    sink = Sink()

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        assert client.supports("SMTPUTF8")
        result = await client.transaction("jürgen@x.test", ["zoë@y.test"], b"hi\r\n", options=["SMTPUTF8"],
                                          utf8=True)
        assert result.final is not None and result.final.code == 250
        await client.quit()

    with smtpd(sink, enable_SMTPUTF8=True) as port:
        run(scenario(port))
    assert sink.delivered == [Delivered("jürgen@x.test", ["zoë@y.test"], b"hi\r\n")]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_large_body_arrives_intact(loop: str, tls: bool) -> None:
    sink = Sink()
    line = b"x" * 990 + b"\r\n"
    body = b"".join((b"." if i % 7 == 0 else b"") + line for i in range(5300))  # ~5.2 MB
    assert len(body) > 5_000_000

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        if tls:
            await client.starttls(client_tls(), "localhost")
            await client.ehlo("client.test")
        result = await client.transaction("a@x.test", ["b@y.test"], body)
        assert result.final is not None and result.final.code == 250
        await client.quit()

    with smtpd(sink, data_size_limit=16 * 2**20, tls_context=server_tls()) as port:
        run(scenario(port), loop)
    assert len(sink.delivered) == 1 and sink.delivered[0].content == body


# --- pipelining on the wire -----------------------------------------------------------------


def test_pipelining_sends_mail_rcpt_and_data_in_one_write() -> None:
    peer = Peer()

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            result = await client.transaction("a@x.test", ["b@y.test", "c@y.test"], b"body\r\n")
            assert result.final == Reply(250, "2.0.0 queued")
            await client.quit()

    run(scenario())
    received = [data for kind, data in peer.log if kind == "recv"]
    assert received[1] == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    # and all of them arrived before the server answered the first
    first_mail_reply = next(i for i, (kind, data) in enumerate(peer.log) if data.startswith(b"250 2.1.0"))
    assert peer.log.index(("recv", received[1])) < first_mail_reply
    assert peer.bodies == [b"body\r\n"]


def test_without_pipelining_commands_wait_for_replies() -> None:
    peer = Peer({b"EHLO": EHLO_PLAIN, b"RCPT TO:<c@y.test>": b"550 5.1.1 unknown\r\n"})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            assert not client.supports("PIPELINING")
            result = await client.transaction("a@x.test", ["b@y.test", "c@y.test"], b"body\r\n")
            assert [r.code for r in result.rcpts] == [250, 550]
            assert result.final is not None and result.final.code == 250
            await client.quit()

    run(scenario())
    kinds = [kind for kind, _ in peer.log]
    assert kinds == ["send"] + ["recv", "send"] * (len(kinds) // 2)  # greeting; one command, one reply
    commands = [data for kind, data in peer.log if kind == "recv" and data != b"body\r\n.\r\n"]
    assert all(data.count(b"\r\n") == 1 for data in commands)
    assert peer.lines == [b"EHLO client.test", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@y.test>",
                          b"RCPT TO:<c@y.test>", b"DATA", b"QUIT"]


def test_source_address_is_bound() -> None:
    peer = Peer()

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client, greeting = await SMTPClient.connect(HOST, port, source_address="127.0.0.2")
            assert greeting == Reply(220, "raw.test ESMTP")
            await client.quit()

    run(scenario())
    assert peer.peers == ["127.0.0.2"]


def test_unsolicited_421_answers_the_next_mail() -> None:
    # The 421 comes after the EHLO reply, with nobody waiting for it.
    peer = Peer({b"EHLO": EHLO_PIPELINING + b"421 4.4.2 idle too long\r\n", b"MAIL": CLOSE})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            assert (await client.ehlo("client.test")).code == 250
            await asyncio.sleep(0.05)
            assert not client.usable
            result = await client.transaction("a@x.test", ["b@y.test"], b"body\r\n")
            assert result.mail == Reply(421, "4.4.2 idle too long")
            assert (result.rcpts, result.data, result.final) == ([], None, None)
            assert not client.usable
            await client.quit()

    run(scenario())
    assert peer.bodies == []


# --- STARTTLS and AUTH ----------------------------------------------------------------------


def test_starttls_verifies_and_resets_extensions(loop: str) -> None:
    sink = Sink()

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        assert client.supports("STARTTLS") and client.tls is None
        reply = await client.starttls(client_tls(), "localhost")
        assert reply.code == 220
        assert client.tls is not None and client.tls.startswith("TLSv1.3 TLS_")
        assert client.extensions == {} and client.usable
        ehlo = await client.ehlo("client.test")
        assert ehlo.code == 250 and not client.supports("STARTTLS") and client.supports("PIPELINING")
        result = await client.transaction("a@x.test", ["b@y.test"], MESSAGE)
        assert result.final is not None and result.final.code == 250
        await client.quit()

    with smtpd(sink, tls_context=server_tls()) as port:
        run(scenario(port), loop)
    assert sink.delivered == [Delivered("a@x.test", ["b@y.test"], STORED)]


def test_starttls_refuses_an_untrusted_certificate() -> None:
    other = trustme.CA().issue_cert("localhost")

    async def scenario(port: int) -> None:
        client = await connect(port)
        await client.ehlo("client.test")
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.starttls(client_tls(), "localhost")
        assert not client.usable and client.tls is None

    with smtpd(Sink(), tls_context=server_tls(other)) as port:
        run(scenario(port))


@pytest.mark.parametrize("extra", [b"250 2.0.0 injected\r\n", b"MAIL FROM", b"\r\n"])
def test_starttls_refuses_bytes_after_the_220(extra: bytes) -> None:
    peer = Peer({b"EHLO": b"250-raw.test\r\n250 STARTTLS\r\n", b"STARTTLS": b"220 2.0.0 go ahead\r\n" + extra})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            with pytest.raises(ProtocolError):
                await client.starttls(client_tls(), "localhost")
            assert not client.usable and client.tls is None

    run(scenario())


def test_starttls_refused_returns_the_reply() -> None:
    peer = Peer({b"STARTTLS": b"454 4.7.0 TLS not available\r\n"})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            reply = await client.starttls(client_tls(), "localhost")
            assert reply == Reply(454, "4.7.0 TLS not available")
            assert client.tls is None and client.usable
            await client.quit()

    run(scenario())


def test_login_plain_over_tls() -> None:
    options = {"tls_context": server_tls(), "authenticator": authenticator, "auth_require_tls": True}

    async def login(port: int, password: str) -> Reply:
        client = await connect(port)
        await client.ehlo("client.test")
        assert "AUTH" not in client.extensions  # aiosmtpd offers AUTH only under TLS
        assert await client.login("alice", password) == Reply(504, "5.5.4 no supported AUTH mechanism")
        await client.starttls(client_tls(), "localhost")
        await client.ehlo("client.test")
        assert "PLAIN" in client.extensions["AUTH"].split()
        reply = await client.login("alice", password)
        await client.quit()
        return reply

    with smtpd(Sink(), **options) as port:
        assert run(login(port, "s3cret")).code == 235
        wrong = run(login(port, "wrong"))
    assert wrong == Reply(535, "5.7.8 Authentication credentials invalid")


def test_login_falls_back_to_auth_login() -> None:
    peer = Peer({
        b"EHLO": b"250-raw.test\r\n250 AUTH=LOGIN\r\n",  # the pre-RFC 4954 spelling
        b"AUTH LOGIN": b"334 VXNlcm5hbWU6\r\n",
        base64.b64encode(b"alice"): b"334 UGFzc3dvcmQ6\r\n",
        base64.b64encode(b"s3cret"): b"235 2.7.0 welcome\r\n",
    })

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            assert client.extensions["AUTH"] == "LOGIN"
            assert await client.login("alice", "s3cret") == Reply(235, "2.7.0 welcome")
            await client.quit()

    run(scenario())
    assert peer.lines == [b"EHLO client.test", b"AUTH LOGIN", b"YWxpY2U=", b"czNjcmV0", b"QUIT"]


def test_helo_when_ehlo_is_not_implemented() -> None:
    peer = Peer({b"EHLO": b"502 5.5.2 command not implemented\r\n"})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            reply = await client.ehlo("client.test")
            assert reply == Reply(250, "raw.test") and client.extensions == {}
            result = await client.transaction("a@x.test", ["b@y.test"], b"body")
            assert result.final == Reply(250, "2.0.0 queued")
            await client.quit()

    run(scenario())
    assert peer.lines[:2] == [b"EHLO client.test", b"HELO client.test"]
    assert peer.bodies == [b"body\r\n"]


# --- failures -------------------------------------------------------------------------------


def test_silent_server_times_out() -> None:
    peer = Peer({b"EHLO": None})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port, timeout=0.3)
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="EHLO"):
                await client.ehlo("client.test")
            assert 0.25 < time.monotonic() - start < 1.5
            assert not client.usable

    run(scenario())


def test_missing_greeting_times_out() -> None:
    async def scenario() -> None:
        async with serving(Peer(greeting=b"").handle) as port:
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="greeting"):
                await SMTPClient.connect(HOST, port, command_timeout=0.3)
            assert time.monotonic() - start < 1.5

    run(scenario())


def test_closed_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        run(SMTPClient.connect(HOST, free_port(), connect_timeout=2))


def test_server_closing_mid_transaction_is_connection_lost() -> None:
    peer = Peer({b"RCPT": CLOSE})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            with pytest.raises(ConnectionLost):
                await client.transaction("a@x.test", ["b@y.test"], b"body\r\n")
            assert not client.usable
            await client.quit()  # never raises
            client.close()
            client.close()
            with pytest.raises(ConnectionLost):
                await client.rset()

    run(scenario())
    assert peer.bodies == []


def test_stalled_body_transfer_times_out(loop: str) -> None:
    """A server that stops reading mid-body: no progress for command_timeout is a timeout."""
    stalled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test\r\n")
        await reader.readuntil(b"\r\n")
        writer.write(EHLO_PIPELINING)
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        await stalled.wait()  # and read nothing more
        writer.close()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # keep the kernel from taking it all
    sock.bind((HOST, 0))
    body = (b"y" * 998 + b"\r\n") * 16000  # 16 MB

    async def scenario() -> None:
        async with serving(handle, sock) as port:
            client = await connect(port, timeout=0.3)
            await client.ehlo("client.test")
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="body"):
                await client.transaction("a@x.test", ["b@y.test"], body)
            assert time.monotonic() - start < 3
            assert not client.usable
            stalled.set()

    run(scenario(), loop)


@pytest.mark.parametrize(("payload", "repeat"), [
    (b"250 " + b"x" * 9000 + b"\r\n", 1),  # one line too long
    (b"x" * 1024, 16 * 1024),  # a line that never ends
    (b"250-" + b"x" * 1000 + b"\r\n", 16 * 1024),  # a reply that never ends
    (b"hello there\r\n", 1),  # not a reply
    (b"250-first\r\n251 second\r\n", 1),  # code changes mid-reply
    (b"2500 ok\r\n", 1),
], ids=["long-line", "endless-line", "endless-reply", "non-numeric", "code-change", "bad-separator"])
def test_hostile_replies_are_protocol_errors(payload: bytes, repeat: int) -> None:
    sent = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test\r\n")
        await reader.readline()
        try:
            for _ in range(repeat):
                writer.write(payload)
                await writer.drain()
                sent[0] += len(payload)
        except ConnectionError:
            pass
        writer.close()

    async def scenario() -> None:
        async with serving(handle) as port:
            client = await connect(port)
            with pytest.raises(ProtocolError):
                await client.ehlo("client.test")
            assert not client.usable

    run(scenario())
    assert sent[0] < len(payload) * repeat or repeat == 1  # cut off, not buffered to the end


@pytest.mark.parametrize("flood", [
    b"250 ok\r\n" * (MAX_UNSOLICITED + 5),
    ((b"250-" + b"x" * 1000 + b"\r\n") * 60 + b"250 end\r\n") * 20,  # 20 replies of 61 KB: over 1 MiB
], ids=["many-replies", "many-bytes"])
def test_unsolicited_flood_is_a_protocol_error(flood: bytes) -> None:

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test\r\n")
        await reader.readline()
        writer.write(EHLO_PIPELINING + flood)
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    async def scenario() -> None:
        async with serving(handle) as port:
            client = await connect(port)
            assert (await client.ehlo("client.test")).code == 250
            await asyncio.sleep(0.2)
            assert not client.usable
            with pytest.raises(ProtocolError, match=r"unsolicited|unread"):
                await client.rset()

    run(scenario())


@pytest.mark.parametrize(("sender", "rcpt", "option"), [
    ("a@x.test", "b@y.test\r\nRCPT TO:<evil@z.test>", "SIZE=1"),
    ("a@x.test\x00", "b@y.test", "SIZE=1"),
    ("a@x.test", "b@y.test", "SIZE=1\nRSET"),
    ("a@x.test", "zoë@y.test", "SIZE=1"),  # not ASCII, and utf8 not asked for
    ("a@x.test", "b@y.test\x7f", "SIZE=1"),
])
def test_bad_arguments_raise_before_anything_is_sent(sender: str, rcpt: str, option: str) -> None:
    peer = Peer()

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            await client.ehlo("client.test")
            with pytest.raises(ValueError):
                await client.transaction(sender, [rcpt], b"body\r\n", options=[option])
            assert client.usable
            await client.quit()

    run(scenario())
    assert peer.lines == [b"EHLO client.test", b"QUIT"]


def test_errors_form_one_tree() -> None:
    assert issubclass(ProtocolError, SMTPClientError)
    assert issubclass(ConnectionLost, SMTPClientError) and issubclass(ConnectionLost, ConnectionError)


# --- the body on the wire -------------------------------------------------------------------


@pytest.mark.parametrize(("data", "wire"), [
    (b"", b"\r\n.\r\n"),
    (b"a", b"a\r\n.\r\n"),
    (b"a\r\n", b"a\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b".\r\n.\r\n", b"..\r\n..\r\n.\r\n"),
    (b"a\n.b\n", b"a\r\n..b\r\n.\r\n"),
    (b"a\rb", b"a\r\nb\r\n.\r\n"),
    (b"\r\r\n\n", b"\r\n\r\n\r\n.\r\n"),
    (b"\x00a\r\x00\n", b"a\r\n.\r\n"),
    (b"a\r\n\x00.\r\n", b"a\r\n..\r\n.\r\n"),
])
def test_encode_body_examples(data: bytes, wire: bytes) -> None:
    assert encode_body(data) == wire


def normalised(data: bytes) -> bytes:
    """The reference: NUL removed, every line ending CRLF, a final CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data.replace(b"\x00", b""))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def unstuffed(wire: bytes) -> bytes:
    """What a server stores: lines up to the final ".", each losing one leading dot."""
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[:-3].split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def test_encode_body_properties() -> None:
    rng = random.Random(5321)
    alphabet = [b"a", b".", b"\r", b"\n", b"\x00", b" "]
    for _ in range(3000):
        data = b"".join(rng.choices(alphabet, k=rng.randrange(0, 40)))
        wire = encode_body(data)
        assert wire.find(b"\r\n.\r\n") == len(wire) - 5, data  # only the terminator ends the data
        assert b"\x00" not in wire
        assert wire.replace(b"\r\n", b"").count(b"\r") == 0 and wire.replace(b"\r\n", b"").count(b"\n") == 0, data
        assert unstuffed(wire) == normalised(data), data


@pytest.mark.parametrize("data", [b"a\n.\nMAIL FROM:<x>\r\n", b"a\r.\rMAIL FROM:<x>\r\n", b"a\n.\r\nRSET\r\n",
                                  b"a\r\n.\nMAIL FROM:<x>\r\n", b"a\r\n\x00.\r\nRSET\r\n"])
def test_encode_body_cannot_smuggle_a_second_message(data: bytes) -> None:
    wire = encode_body(data)
    assert wire.find(b"\r\n.\r\n") == len(wire) - 5
    assert wire.find(b"\n.\n") == -1 and wire.find(b"\r.\r") == -1
