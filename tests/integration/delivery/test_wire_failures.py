"""wire.SMTPClient against silent, closing and hostile peers; bad arguments; the body as encoded for the wire."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time

import pytest

from mailrelay.delivery.replies import MAX_UNSOLICITED, ConnectionLost, ProtocolError, SMTPClientError
from mailrelay.delivery.wire import SMTPClient, encode_body
from tests.integration.delivery.wirepeers import (
    CLOSE,
    EHLO_PIPELINING,
    HOST,
    Peer,
    connect,
    free_port,
    run,
    serving,
)

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
