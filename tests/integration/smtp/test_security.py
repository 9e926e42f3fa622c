"""Adversarial SMTP: open-relay tricks, smuggling, STARTTLS injection, limits, login throttling."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time

import pytest

from tests.integration.smtp.conftest import PASSWORD, Node
from tests.integration.smtp.rawclient import RawClient, auth_plain

MSG = b"Subject: t\r\n\r\nbody\r\n"


# -- open relay -------------------------------------------------------------------------------

RELAY_TRICKS = [
    "victim@example.com",
    "victim%example.com@mx.mailrelay.test",  # percent hack
    "@mx.mailrelay.test:victim@example.com",  # source route
    "example.com!victim@mx.mailrelay.test",  # bang path
    '"victim@example.com"@mx.mailrelay.test',  # quoted local part
    "victim@example.com@mx.mailrelay.test",
    "victim@[127.0.0.1]",
]


@pytest.mark.parametrize("listener", ["smtp", "alt"])
@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_unauthenticated_relay_is_denied(node: Node, listener: str, rcpt: str) -> None:
    c = RawClient(node.port(listener))
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<spammer@example.net>")[0] == 250
    code, text = c.cmd(f"RCPT TO:<{rcpt}>")
    # Malformed paths may be refused as syntax errors first; never accepted.
    assert code in (554, 501, 553), text
    if code == 554:
        assert "5.7.1" in text
    assert c.cmd("DATA")[0] == 554
    c.close()
    assert node.stored() == []


def test_trusted_network_may_relay_without_auth(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory('[submission]\ntrusted_networks = ["127.0.0.0/8"]\ntrusted_account = "bob"')
    client = node.smtp("smtp")
    assert client.sendmail("app@example.net", ["someone@example.com"], MSG) == {}
    client.quit()
    [stored] = node.stored()
    bob = node.app.accounts.get("bob")
    assert bob is not None and stored["account_id"] == bob.id
    assert stored["auth_user"] is None
    assert "with ESMTP id" in stored["trace_headers"].decode()
    # ...but 587 still demands AUTH from trusted networks
    sub = node.smtp("submission")
    sub.starttls(context=node.client_ssl)
    sub.ehlo()
    assert sub.mail("app@example.net")[0] == 530


def test_listener_override_of_trusted_networks(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory('[submission]\ntrusted_networks = ["127.0.0.0/8"]\ntrusted_account = "bob"\n'
                        '[listener.alt]\ntrusted_networks = []')
    alt = node.smtp("alt")
    alt.ehlo()
    alt.mail("app@example.net")
    assert alt.rcpt("someone@example.com")[0] == 554
    smtp = node.smtp("smtp")
    smtp.ehlo()
    smtp.mail("app@example.net")
    assert smtp.rcpt("someone@example.com")[0] == 250


# -- SMTP smuggling: only CRLF.CRLF ends DATA -------------------------------------------------

SMUGGLING = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_variants_do_not_end_data(node: Node, name: str) -> None:
    c = node.raw_login()
    c.cmd("MAIL FROM:<alice@example.net>")
    c.cmd("RCPT TO:<bob@example.com>")
    assert c.cmd("DATA")[0] == 354
    smuggled = (b"MAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    c.send(b"Subject: outer\r\n\r\nfirst" + SMUGGLING[name] + smuggled + b".\r\n")
    code, text = c.reply()
    # One message, refused for its bare CR/LF; the smuggled commands were content, not commands.
    assert code == 550 and "5.5.2" in text, text
    assert c.cmd("NOOP")[0] == 250, "the next reply belongs to our NOOP, not to a smuggled command"
    c.close()
    assert node.stored() == []


def test_normalize_mode_keeps_smuggled_text_as_content(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory('[smtp]\nbare_newline = "normalize"\n[auth]\nallow_plaintext = true')
    c = RawClient(node.port("alt"))
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd(auth_plain("alice", PASSWORD))[0] == 235
    c.cmd("MAIL FROM:<alice@example.net>")
    c.cmd("RCPT TO:<bob@example.com>")
    c.cmd("DATA")
    c.send(b"Subject: outer\r\n\r\nfirst\n.\nMAIL FROM:<admin@example.net>\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    assert c.cmd("QUIT")[0] == 221
    [stored] = node.stored()
    assert stored["mail_from"] == "alice@example.net"
    assert stored["body"] == b"Subject: outer\r\n\r\nfirst\r\n.\r\nMAIL FROM:<admin@example.net>\r\n"


def test_dot_stuffing_is_undone_and_empty_line_dot_ends(node: Node) -> None:
    c = node.raw("submissions", implicit_tls=True)
    c.cmd("EHLO client.test")
    c.cmd(auth_plain("alice", PASSWORD))
    c.cmd("MAIL FROM:<alice@example.net>")
    c.cmd("RCPT TO:<bob@example.com>")
    c.cmd("DATA")
    # sent in awkward pieces: the terminator split across writes must still be found
    for piece in (b"Subject: d\r\n\r\n..leading dot\r\n", b"..\r\n", b"tail\r", b"\n.", b"\r\n"):
        c.send(piece)
        time.sleep(0.01)
    assert c.reply()[0] == 250
    c.close()
    [stored] = node.stored()
    assert stored["body"] == b"Subject: d\r\n\r\n.leading dot\r\n.\r\ntail\r\n"


# -- STARTTLS ---------------------------------------------------------------------------------

def test_commands_pipelined_with_starttls_are_discarded(node: Node) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    c.cmd("EHLO client.test")
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.net>\r\nRCPT TO:<x@example.com>\r\n")
    assert c.reply()[0] == 220
    c.starttls(node.client_ssl)
    # If the injected MAIL had run inside TLS, this MAIL would get 503 (nested) or a stray reply.
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and "STARTTLS" not in text
    assert c.cmd("MAIL FROM:<alice@example.net>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    c.close()


def test_starttls_resets_authentication_state(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[auth]\nallow_plaintext = true")
    c = RawClient(node.port("submission"))
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd(auth_plain("alice", PASSWORD))[0] == 235
    assert c.cmd("STARTTLS")[0] == 220
    c.starttls(node.client_ssl)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@example.net>")[0] == 530, "login from before TLS must be forgotten"
    c.close()


def test_second_starttls_is_refused(node: Node) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls(node.client_ssl)
    c.cmd("EHLO client.test")
    code, text = c.cmd("STARTTLS")
    assert code == 503 and "5.5.1" in text
    c.close()


def test_auth_before_tls_is_refused(node: Node) -> None:
    c = RawClient(node.port("submission"))
    c.reply()
    code, text = c.cmd("EHLO client.test")
    assert "AUTH" not in text
    code, text = c.cmd(auth_plain("alice", PASSWORD))
    assert code == 538 and "5.7.11" in text
    c.close()


def test_plain_listener_without_tls_when_configured(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory('[listener.alt]\ntls = "none"\nallow_plaintext_auth = true')
    c = RawClient(node.port("alt"))
    c.reply()
    _code, text = c.cmd("EHLO client.test")
    assert "STARTTLS" not in text and "AUTH PLAIN LOGIN" in text
    assert c.cmd("STARTTLS")[0] == 502
    c.close()


def test_require_tls_listener(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[listener.alt]\nrequire_tls = true")
    client = node.smtp("alt")
    client.ehlo()
    code, text = client.mail("alice@example.net")
    assert code == 530 and text.startswith(b"5.7.0")


# -- AUTH abuse -------------------------------------------------------------------------------

def test_plain_authzid_other_than_login_is_refused(node: Node) -> None:
    c = node.raw("submissions", implicit_tls=True)
    c.cmd("EHLO client.test")
    code, text = c.cmd(auth_plain("alice", PASSWORD, authzid="bob"))
    assert code == 535 and "5.7.8" in text
    code, _ = c.cmd(auth_plain("alice", PASSWORD, authzid="alice"))
    assert code == 235, "an authzid equal to the login is fine"
    c.close()


def test_auth_cancel_and_garbage(node: Node) -> None:
    c = node.raw("submissions", implicit_tls=True)
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH LOGIN")[0] == 334
    code, _text = c.cmd("*")
    assert code == 501
    assert c.cmd("AUTH PLAIN")[0] == 334
    assert c.cmd("!!!notbase64")[0] == 501
    assert c.cmd("AUTH CRAM-MD5")[0] == 504
    c.close()


def test_failed_logins_slow_down_then_lock_out_across_reconnects(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[auth]\nslowdown_after = 2\nlockout_after = 4\nlockout_seconds = 60")
    bad = auth_plain("alice", "wrong-password")
    timings = []
    for _ in range(3):  # three connections: the failures add up across them
        c = node.raw("submissions", implicit_tls=True)
        c.cmd("EHLO client.test")
        started = time.monotonic()
        code, text = c.cmd(bad)
        timings.append(time.monotonic() - started)
        assert code == 535 and "5.7.8" in text
        c.close()
    assert timings[0] < 0.5 and timings[2] >= 0.9, f"the third failure is answered slowly: {timings}"
    # The 4th failure locks the address out...
    c = node.raw("submissions", implicit_tls=True)
    c.cmd("EHLO client.test")
    code, text = c.cmd(bad)
    assert code == 421 and "4.7.0" in text
    assert c.closed()
    # ...so a new connection is refused at once, even one that would bring the right password.
    late = RawClient(node.port("submissions"))
    late.sock = node.client_ssl.wrap_socket(late.sock, server_hostname="localhost")
    code, text = late.reply()
    assert code == 421 and "4.7.0" in text
    # Other listeners refuse it too: the count is per address, not per port.
    other = RawClient(node.port("smtp"))
    assert other.reply()[0] == 421


def test_secrets_never_reach_the_log(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    _, key = node.app.accounts.create_key("alice")
    node.submission("alice", PASSWORD).quit()
    node.submission("apikey", key).quit()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        node.submission("alice", "Wr0ng-Secret-Value")
    logged = caplog.text
    assert "AUTH ok" in logged
    for secret in (PASSWORD, key, key.split(".")[-1], "Wr0ng-Secret-Value",
                   base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()):
        assert secret not in logged


# -- header injection and syntax ---------------------------------------------------------------

@pytest.mark.parametrize("helo", [b"evil\x00host", b"evil\rX-Injected: 1"])
def test_control_characters_in_helo_are_refused(node: Node, helo: bytes) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    code, _ = c.cmd(b"EHLO " + helo)
    assert code in (500, 501)
    c.close()


@pytest.mark.parametrize("addr", [b"a\x00b@example.com", b"a\rb@example.com", b"a\x1bb@example.com"])
def test_control_characters_in_addresses_are_refused(node: Node, addr: bytes) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    c.cmd("EHLO client.test")
    code, _ = c.cmd(b"MAIL FROM:<" + addr + b">")
    assert code in (500, 501)
    assert c.cmd(b"MAIL FROM:<ok@example.net>")[0] == 250
    code, _ = c.cmd(b"RCPT TO:<" + addr + b">")
    assert code in (500, 501)
    c.close()


def test_command_line_over_512_octets(node: Node) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    c.cmd("EHLO client.test")
    code, text = c.cmd("MAIL FROM:<" + "a" * 520 + "@example.net>")
    assert code == 500 and "5.5.2" in text
    code, text = c.cmd("NOOP " + "x" * 20000)
    assert code == 500 and "5.5.2" in text
    assert c.cmd("NOOP")[0] == 250, "the session goes on after an overlong line"
    c.close()


def test_too_many_errors_disconnects(node: Node) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    codes = [c.cmd("BOGUS")[0] for _ in range(19)]
    assert set(codes) == {500}
    code, _text = c.cmd("BOGUS")
    assert code == 500
    assert c.reply()[0] == 421
    assert c.closed()


# -- limits -----------------------------------------------------------------------------------

def test_declared_size_over_limit(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nmax_message_size = 2048")
    client = node.submission()
    client.ehlo()
    assert "2048" in client.esmtp_features["size"]
    code, text = client.mail("alice@example.net", ["SIZE=5000"])
    assert (code, text[:5]) == (552, b"5.3.4")


def test_actual_size_over_limit_is_refused_and_nothing_stored(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nmax_message_size = 2048")
    client = node.submission()
    client.mail("alice@example.net")  # no SIZE declared: the limit bites during DATA
    client.rcpt("bob@example.com")
    code, text = client.data(b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 400)
    assert code == 552 and text.startswith(b"5.3.4")
    assert client.noop()[0] == 250
    assert client.sendmail("alice@example.net", ["bob@example.com"], MSG) == {}
    assert len(node.stored()) == 1


def test_recipient_limit(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nmax_recipients = 3")
    client = node.submission()
    client.mail("alice@example.net")
    codes = [client.rcpt(f"r{i}@example.com") for i in range(4)]
    assert [c for c, _ in codes] == [250, 250, 250, 452]
    assert codes[3][1].startswith(b"4.5.3")
    assert client.data(MSG)[0] == 250
    [stored] = node.stored()
    assert len(stored["recipients"]) == 3


def test_idle_timeout_closes_with_421(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nidle_timeout = 0.5")
    c = RawClient(node.port("smtp"))
    c.reply()
    c.cmd("EHLO client.test")
    time.sleep(1.2)
    code, text = c.reply()
    assert code == 421 and "4.4.2" in text
    assert c.closed()


def test_connection_limit_per_address(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nmax_connections_per_ip = 2")
    held = [RawClient(node.port("smtp")) for _ in range(2)]
    for c in held:
        assert c.reply()[0] == 220
    extra = RawClient(node.port("smtp"))
    code, text = extra.reply()
    assert code == 421 and "4.7.0" in text
    assert extra.closed()
    held[0].cmd("QUIT")
    held[0].close()
    time.sleep(0.2)
    again = RawClient(node.port("smtp"))
    assert again.reply()[0] == 220


def test_connection_limit_total(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("[smtp]\nmax_connections = 3")
    held = [RawClient(node.port(name)) for name in ("smtp", "alt", "submission")]
    for c in held:
        assert c.reply()[0] == 220
    extra = RawClient(node.port("alt"))
    code, text = extra.reply()
    assert code == 421 and "4.7.0" in text


def test_a_port_in_use_is_a_warning_and_the_rest_serve(node_factory) -> None:  # type: ignore[no-untyped-def]
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    node = node_factory(f'[listener.alt]\nlisten = ["127.0.0.1:{port}"]')
    failures = node.bind_failures  # type: ignore[attr-defined]
    assert [f.listener for f in failures] == ["alt"]
    assert "listener.alt.listen" in failures[0].advice()
    client = node.smtp("smtp")
    assert client.noop()[0] == 250
    blocker.close()


def test_client_that_never_reads_does_not_hurt_others(node: Node) -> None:
    hog = socket.create_connection(("127.0.0.1", node.port("smtp")))
    hog.sendall(b"NOOP\r\n" * 50000)
    client = node.smtp("smtp")
    assert client.noop()[0] == 250
    hog.close()


def test_rfc_5321_ordering_errors(node: Node) -> None:
    c = RawClient(node.port("smtp"))
    c.reply()
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 503  # before EHLO
    c.cmd("EHLO client.test")
    assert c.cmd("RCPT TO:<a@example.com>")[0] == 503
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:a@example.net")[0] == 501
    assert c.cmd("MAIL FROM:<a@example.net> FOO=BAR")[0] == 555
    assert c.cmd("VRFY a")[0] == 252
    assert c.cmd("EXPN a")[0] == 502
    assert c.cmd("QUIT")[0] == 221
    assert c.closed()


def test_ssl_context_rejects_plain_on_465(node: Node) -> None:
    c = RawClient(node.port("submissions"))
    c.send(b"EHLO client.test\r\n")
    assert c.closed()
    _ = ssl  # the port speaks TLS from the first byte
