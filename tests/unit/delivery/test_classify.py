"""Reply and error classification: only a 5xx bounces; hard bounces are 5.1.x address failures."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from mailrelay.core.reply import Refusal, Reply
from mailrelay.delivery.classify import (
    MAX_DIAGNOSTIC,
    Outcome,
    Verdict,
    classify_error,
    classify_reply,
    is_hard_bounce,
    is_remote_reply,
)
from mailrelay.delivery.replies import ConnectionLost, ProtocolError
from mailrelay.resolver.base import DNSTemporaryError


@pytest.mark.parametrize(("code", "text", "outcome", "status", "diagnostic"), [
    (250, "2.0.0 Ok: queued as 4Xy", "delivered", "2.0.0", "250 2.0.0 Ok: queued as 4Xy"),
    (250, "Ok", "delivered", "2.0.0", "250 Ok"),
    (451, "4.7.1 Greylisted, try again in 5 minutes", "deferred", "4.7.1",
     "451 4.7.1 Greylisted, try again in 5 minutes"),
    (421, "Service not available", "deferred", "4.0.0", "421 Service not available"),
    (550, "5.1.1 <bob@example.net>: Recipient address rejected", "bounced", "5.1.1",
     "550 5.1.1 <bob@example.net>: Recipient address rejected"),
    (554, "", "bounced", "5.0.0", "554"),
    (552, "5.3.4", "bounced", "5.3.4", "552 5.3.4"),
    (550, "5.1.10 Recipient domain has null MX", "bounced", "5.1.10",
     "550 5.1.10 Recipient domain has null MX"),
    # RFC 3463: the class must match the code; the basic code wins when it does not.
    (550, "4.1.1 confused server", "bounced", "5.1.1", "550 4.1.1 confused server"),
    (450, "5.2.2 Mailbox full", "deferred", "4.2.2", "450 5.2.2 Mailbox full"),
    # Not an enhanced code: 1.2.3 has no valid class, 5.1.1x is no code at all.
    (550, "1.2.3 odd", "bounced", "5.0.0", "550 1.2.3 odd"),
    (550, "5.1.1x odd", "bounced", "5.0.0", "550 5.1.1x odd"),
    # Anything but 2xx/4xx/5xx where a final answer was due: a broken server, deferred.
    (354, "go ahead", "deferred", "4.5.0", "354 go ahead"),
    (600, "5.1.1 nonsense", "deferred", "4.5.0", "600 5.1.1 nonsense"),
    (199, "", "deferred", "4.5.0", "199"),
])
def test_replies(code: int, text: str, outcome: Outcome, status: str, diagnostic: str) -> None:
    assert classify_reply(code, text) == Verdict(outcome, status, diagnostic, remote=True)


def test_multiline_reply_becomes_one_line_with_the_first_enhanced_code() -> None:
    # As aiosmtplib gives a multi-line reply: lines without the code, joined by "\n".
    text = ("5.1.1 The email account that you tried to reach does not exist. Please try\n"
            "5.1.1 double-checking the recipient's email address for typos or\n"
            "5.1.1 unnecessary spaces. https://support.example/?p=NoSuchUser x1si")
    v = classify_reply(550, text)
    assert v.status == "5.1.1" and v.outcome == "bounced" and v.remote
    assert v.diagnostic == ("550 5.1.1 The email account that you tried to reach does not exist. "
                            "Please try double-checking the recipient's email address for typos "
                            "or unnecessary spaces. https://support.example/?p=NoSuchUser x1si")
    assert is_hard_bounce(v)


def test_remote_text_is_flattened_and_bounded() -> None:
    v = classify_reply(550, "5.7.1 evil\r\nInjected: header\x00\x1b[31m\tred\ud800")
    assert "\r" not in v.diagnostic and "\n" not in v.diagnostic and "\x00" not in v.diagnostic
    assert "\x1b" not in v.diagnostic and "\ud800" not in v.diagnostic
    assert v.diagnostic.startswith("550 5.7.1 evil Injected: header")
    long = classify_reply(550, "5.1.1 " + "x" * 5000)
    assert len(long.diagnostic) == MAX_DIAGNOSTIC and long.diagnostic.endswith("...")
    assert long.status == "5.1.1"


@pytest.mark.parametrize(("exc", "status", "words"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "4.4.1", "connection refused"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "4.4.2", "connection lost"),
    (BrokenPipeError(), "4.4.2", "connection lost"),
    (asyncio.IncompleteReadError(b"", 10), "4.4.2", "connection lost"),
    (ConnectionLost("connection lost while waiting for a reply"), "4.4.2", "connection lost"),
    (TimeoutError(), "4.4.2", "timed out (TimeoutError)"),
    (TimeoutError("no reply to RCPT within 300 s"), "4.4.2", "timed out (no reply to RCPT"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "4.4.1", "host unreachable"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "4.4.1", "host unreachable"),
    (OSError(errno.EMFILE, "Too many open files"), "4.4.0", "network error"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "4.4.3", "lookup failed"),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), "4.4.3", "lookup"),
    (DNSTemporaryError("SERVFAIL for example.net MX"), "4.4.3", "DNS lookup failed"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"), "4.7.5",
     "certificate verification failed"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "4.7.5", "TLS handshake"),
    (ProtocolError("reply line longer than 8192 bytes"), "4.5.0", "SMTP protocol error (reply line"),
    (ValueError("bug"), "4.3.0", "internal error (bug)"),
    (asyncio.CancelledError(), "4.3.0", "delivery interrupted"),
    (KeyboardInterrupt(), "4.3.0", "delivery interrupted"),
])
def test_errors_defer(exc: BaseException, status: str, words: str) -> None:
    v = classify_error(exc)
    assert (v.outcome, v.status, v.remote) == ("deferred", status, False)
    assert words in v.diagnostic
    assert "\n" not in v.diagnostic and not is_remote_reply(v.diagnostic)
    assert not is_hard_bounce(v)


def test_a_timeout_before_the_greeting_means_no_answer_from_the_host() -> None:
    v = classify_error(TimeoutError("no connection within 30 s"), connecting=True)
    assert (v.outcome, v.status) == ("deferred", "4.4.1") and "connection timed out" in v.diagnostic
    assert classify_error(ConnectionRefusedError(), connecting=True).status == "4.4.1"


def test_our_own_refusal_is_permanent_only_when_its_reply_is() -> None:
    null_mx = Refusal(Reply(556, "5.1.10", "Domain example.net does not accept mail (null MX)"))
    v = classify_error(null_mx)
    assert v == Verdict("bounced", "5.1.10", "Domain example.net does not accept mail (null MX)")
    assert not v.remote and is_hard_bounce(v)
    busy = classify_error(Refusal(Reply(451, "4.3.0", "Queue busy")))
    assert (busy.outcome, busy.status, busy.remote) == ("deferred", "4.3.0", False)
    # Our own prose never passes for a remote reply in a DSN.
    odd = classify_error(Refusal(Reply(550, "5.7.1", "550 looks like a reply")))
    assert odd.diagnostic == "error: 550 looks like a reply" and not is_remote_reply(odd.diagnostic)


@pytest.mark.parametrize(("status", "hard"), [
    ("5.1.1", True), ("5.1.2", True), ("5.1.3", True), ("5.1.6", True), ("5.1.10", True),
    ("5.1.0", False), ("5.1.7", False), ("5.2.2", False), ("5.7.1", False), ("5.0.0", False),
    ("5.1.100", False),
])
def test_hard_bounces(status: str, hard: bool) -> None:
    assert is_hard_bounce(Verdict("bounced", status, "550", remote=True)) is hard


def test_a_temporary_address_failure_is_not_hard() -> None:
    v = classify_reply(450, "4.1.1 Recipient lookup temporarily failed")
    assert v.status == "4.1.1" and not is_hard_bounce(v)
    assert not is_hard_bounce(Verdict("deferred", "5.1.1", "confused caller"))


def test_is_remote_reply() -> None:
    assert is_remote_reply("550 5.1.1 x") and is_remote_reply("554") and is_remote_reply("421-x")
    assert not is_remote_reply("connection refused") and not is_remote_reply("5501 x")


@pytest.mark.parametrize(("text", "status"), [
    ("5.5.1 Error: need MAIL command", "4.5.1"),
    ("Bad sequence of commands", "4.5.0"),
    ("5.7.0 Must issue a STARTTLS command first", "4.7.0"),
])
def test_503_bad_sequence_is_our_own_protocol_error_and_defers(text: str, status: str) -> None:
    # RFC 5321 §4.2.3: 503 says our commands came in the wrong order. Nothing is wrong with
    # the address; a fixed client (or a smarthost configured right) would deliver it.
    v = classify_reply(503, text)
    assert (v.outcome, v.status, v.remote) == ("deferred", status, True)
    assert v.diagnostic == f"503 {text}"
    assert not is_hard_bounce(v)
