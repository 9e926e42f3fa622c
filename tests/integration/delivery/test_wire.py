"""wire.SMTPClient over loopback: transactions against aiosmtpd, pipelining on the wire, STARTTLS, AUTH."""

from __future__ import annotations

import asyncio
import base64
import ssl

import pytest
import trustme

from mailrelay.delivery.replies import ProtocolError, RemoteReply
from mailrelay.delivery.wire import SMTPClient
from tests.integration.delivery.wirepeers import (
    CLOSE,
    EHLO_PIPELINING,
    EHLO_PLAIN,
    HOST,
    MESSAGE,
    STORED,
    Delivered,
    Peer,
    Sink,
    authenticator,
    client_tls,
    connect,
    run,
    server_tls,
    serving,
    smtpd,
)

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
        assert first.mail == RemoteReply(250, "2.1.0 Ok")
        assert first.rcpts == [RemoteReply(250, "2.1.5 Ok")] * 2
        assert first.data is not None and first.data.code == 354
        assert first.final == RemoteReply(250, "2.0.0 queued")
        assert client.usable
        second = await client.transaction("", ["d@y.test"], b"second\r\n")
        assert second.final == RemoteReply(250, "2.0.0 queued") and client.usable
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
        assert result.mail == RemoteReply(550, "5.7.1 sender refused")
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
            assert result.final == RemoteReply(250, "2.0.0 queued")
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
            assert greeting == RemoteReply(220, "raw.test ESMTP")
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
            assert result.mail == RemoteReply(421, "4.4.2 idle too long")
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
            assert reply == RemoteReply(454, "4.7.0 TLS not available")
            assert client.tls is None and client.usable
            await client.quit()

    run(scenario())


def test_login_plain_over_tls() -> None:
    options = {"tls_context": server_tls(), "authenticator": authenticator, "auth_require_tls": True}

    async def login(port: int, password: str) -> RemoteReply:
        client = await connect(port)
        await client.ehlo("client.test")
        assert "AUTH" not in client.extensions  # aiosmtpd offers AUTH only under TLS
        assert await client.login("alice", password) == RemoteReply(504, "5.5.4 no supported AUTH mechanism")
        await client.starttls(client_tls(), "localhost")
        await client.ehlo("client.test")
        assert "PLAIN" in client.extensions["AUTH"].split()
        reply = await client.login("alice", password)
        await client.quit()
        return reply

    with smtpd(Sink(), **options) as port:
        assert run(login(port, "s3cret")).code == 235
        wrong = run(login(port, "wrong"))
    assert wrong == RemoteReply(535, "5.7.8 Authentication credentials invalid")


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
            assert await client.login("alice", "s3cret") == RemoteReply(235, "2.7.0 welcome")
            await client.quit()

    run(scenario())
    assert peer.lines == [b"EHLO client.test", b"AUTH LOGIN", b"YWxpY2U=", b"czNjcmV0", b"QUIT"]


def test_helo_when_ehlo_is_not_implemented() -> None:
    peer = Peer({b"EHLO": b"502 5.5.2 command not implemented\r\n"})

    async def scenario() -> None:
        async with serving(peer.handle) as port:
            client = await connect(port)
            reply = await client.ehlo("client.test")
            assert reply == RemoteReply(250, "raw.test") and client.extensions == {}
            result = await client.transaction("a@x.test", ["b@y.test"], b"body")
            assert result.final == RemoteReply(250, "2.0.0 queued")
            await client.quit()

    run(scenario())
    assert peer.lines[:2] == [b"EHLO client.test", b"HELO client.test"]
    assert peer.bodies == [b"body\r\n"]
