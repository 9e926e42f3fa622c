"""Adversarial and sloppy clients against a real node: pipelining edges, byte-split input,
disconnects at awkward moments, TLS handshake abuse, AUTH abuse, limits at their exact edge.

Each test here was written against a bug or gap a review found; they stay as regression tests.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.smtp.conftest import PASSWORD, Node
from tests.integration.smtp.rawclient import RawClient

NodeFactory = Callable[..., Node]

# Port 25 from 127.0.0.0/8 relays without AUTH as "bob": lets tests speak plain TCP, so every
# send() is one segment we control. Trusted peers are exempt from the per-address connection
# limit, so the connection-limit tests below do not use it.
TRUSTED = '[submission]\ntrusted_networks = ["127.0.0.0/8"]\ntrusted_account = "bob"\n'
PLAINTEXT_AUTH = "[auth]\nallow_plaintext = true\n"
# Leaked sessions look busy forever and would hold up shutdown for its full timeout.
QUICK_STOP = "[server]\nshutdown_timeout = 0.2\n"

_OPEN: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_clients(node_factory: NodeFactory) -> Iterator[None]:
    """Close every client before the node stops, so a failed test does not wait for shutdown."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str | bytes) -> str:
    return base64.b64encode(text if isinstance(text, bytes) else text.encode()).decode()


def connect(node: Node, listener: str, *, host: str = "127.0.0.1", ehlo: bool = True) -> RawClient:
    """Banner read (and EHLO sent, unless told otherwise); port 465 wrapped in TLS first."""
    c = RawClient(node.port(listener), host=host)
    _OPEN.append(c)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if listener == "submissions":
        c.sock = node.client_ssl.wrap_socket(c.sock, server_hostname="localhost")
    code, text = c.reply()
    assert code == 220, text
    if ehlo:
        assert c.cmd("EHLO client.test")[0] == 250
    return c


def login(node: Node, listener: str = "submissions", user: str = "alice") -> RawClient:
    c = connect(node, listener)
    code, text = c.cmd("AUTH PLAIN " + plain(user, PASSWORD))
    assert code == 235, text
    return c


def envelope(c: RawClient, rcpts: int = 1) -> None:
    """MAIL, RCPTs and DATA pipelined in one write (RFC 2920), up to the 354."""
    lines = [b"MAIL FROM:<alice@example.net>"] + [b"RCPT TO:<r%d@example.com>" % i for i in range(rcpts)]
    c.send(b"\r\n".join([*lines, b"DATA"]) + b"\r\n")
    codes = [c.reply()[0] for _ in range(rcpts + 2)]
    assert codes == [250] * (rcpts + 1) + [354], codes


def reset(c: RawClient) -> None:
    """Close with RST instead of FIN, as a crashing client or a middlebox does."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def banner_code(node: Node, listener: str, *, within: float = 2.0) -> int:
    """Connect until the banner is 220 or `within` seconds pass; the last banner code."""
    deadline = time.monotonic() + within
    while True:
        c = RawClient(node.port(listener))
        try:
            if listener == "submissions":
                c.sock = node.client_ssl.wrap_socket(c.sock, server_hostname="localhost")
            code = c.reply()[0]
        except (ConnectionError, ssl.SSLError):
            code = 0
        c.close()
        if code == 220 or time.monotonic() > deadline:
            return code
        time.sleep(0.05)


def wait_stored(node: Node, count: int, within: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        stored = node.stored()
        if len(stored) >= count or time.monotonic() > deadline:
            return stored
        time.sleep(0.02)


# -- pipelining and split input -----------------------------------------------------------------

def send_split_everywhere(c: RawClient, stream: bytes) -> None:
    """One message per split point of `stream`, sent in two writes; each must get 250."""
    for i in range(1, len(stream)):
        envelope(c)
        c.send(stream[:i])
        time.sleep(0.002)
        c.send(stream[i:])
        code, text = c.reply()
        assert code == 250, (i, text)


def test_data_split_at_every_byte_boundary(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    stream = b"Subject: s\r\n\r\n..dot\r\n..\r\nx\r\n.\r\n"
    c = connect(node, "smtp")
    send_split_everywhere(c, stream)
    assert c.cmd("QUIT")[0] == 221
    stored = node.stored()
    assert len(stored) == len(stream) - 1
    assert {bytes(s["body"]) for s in stored} == {b"Subject: s\r\n\r\n.dot\r\n.\r\nx\r\n"}


def test_smuggling_split_at_every_byte_boundary_in_normalize_mode(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + '[smtp]\nbare_newline = "normalize"')
    # If "\n.\r\n" ended DATA anywhere, RSET would answer and "." would be a 500: replies shift.
    stream = b"a\n.\r\nRSET\r\n.\r\n"
    c = connect(node, "smtp")
    send_split_everywhere(c, stream)
    assert c.cmd("NOOP")[0] == 250, "no stray reply from a smuggled command"
    stored = node.stored()
    assert len(stored) == len(stream) - 1
    assert {bytes(s["body"]) for s in stored} == {b"a\r\n.\r\nRSET\r\n"}


def test_whole_transactions_pipelined_back_to_back(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    envelope(c)
    # end of message 1, the whole of message 2 and QUIT in one write, while message 1 commits
    c.send(b"one\r\n.\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    codes = [c.reply()[0] for _ in range(4)]
    assert codes == [250, 250, 250, 354]
    c.send(b"two\r\n.\r\nQUIT\r\n")
    assert c.reply()[0] == 250
    assert c.reply()[0] == 221
    assert c.closed()
    assert sorted(bytes(s["body"]) for s in node.stored()) == [b"one\r\n", b"two\r\n"]


def test_rset_and_ehlo_mid_transaction_drop_it(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250
    assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
    assert c.cmd("EHLO again.test")[0] == 250
    assert c.cmd("RCPT TO:<b@example.com>")[0] == 503
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250, "EHLO ended the old transaction"
    c.close()
    assert node.stored() == []


def test_zero_length_body_is_committed_with_trace_headers(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    envelope(c)
    code, text = c.cmd(".")
    assert code == 250, text
    c.close()
    [stored] = node.stored()
    assert stored["body"] == b""
    assert bytes(stored["trace_headers"]).startswith(b"Received: from client.test")


def test_commands_after_a_refused_message_in_the_same_packet_are_answered(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    # A sloppy client sends the body with DATA; the message is refused (bare LF), NOOP follows.
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
           b"bad\nline\r\n.\r\nNOOP\r\n")
    codes = [c.reply()[0] for _ in range(4)]
    assert codes == [250, 250, 354, 550]
    c.sock.settimeout(0.5)
    try:
        code = c.reply()[0]
    except TimeoutError:
        code = 0
    assert code == 250, "the NOOP pipelined after the refused message was never answered"


def test_half_closed_client_still_gets_the_reply_to_its_message(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    envelope(c)
    c.send(b"hello\r\n.\r\nQUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)  # `printf ... | nc -N`: done sending, still reading
    replies = []
    try:
        while True:
            replies.append(c.reply()[0])
    except (ConnectionError, TimeoutError):
        pass
    assert len(wait_stored(node, 1)) == 1, "the message was committed..."
    assert replies == [250, 221], "...so its 250 must reach the client"


# -- disconnects at awkward moments ---------------------------------------------------------------

def test_disconnect_mid_data_stores_nothing_and_frees_the_slot(node_factory: NodeFactory) -> None:
    node = node_factory("[smtp]\nmax_connections_per_ip = 1")
    c = login(node)
    envelope(c)
    c.send(b"Subject: cut\r\n\r\nhalf a mess")
    reset(c)
    assert banner_code(node, "submissions") == 220
    assert node.stored() == []


def test_disconnect_right_after_the_terminator_still_commits(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_connections = 1")
    c = connect(node, "smtp")
    envelope(c)
    c.send(b"gone\r\n.\r\n")
    c.close()  # during the group commit
    assert [bytes(s["body"]) for s in wait_stored(node, 1)] == [b"gone\r\n"]
    assert banner_code(node, "smtp") == 220


def test_disconnect_during_auth_thread_work_frees_the_slot(node_factory: NodeFactory) -> None:
    node = node_factory("[smtp]\nmax_connections_per_ip = 1\n[auth]\nslowdown_after = 0\nlockout_after = 9")
    c = connect(node, "submissions")
    c.send(("AUTH PLAIN " + plain("alice", "wrong-password") + "\r\n").encode())
    reset(c)  # the reply is delayed (slowdown): gone before it comes
    assert banner_code(node, "submissions", within=3.0) == 220
    ok = login(node)
    assert ok.cmd("NOOP")[0] == 250


def test_idle_timeout_mid_data_stores_nothing(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nidle_timeout = 0.2")
    c = connect(node, "smtp")
    envelope(c)
    c.send(b"Subject: stalled\r\n\r\nno end")
    code, text = c.reply()
    assert code == 421 and "4.4.2" in text
    assert c.closed()
    assert node.stored() == []


# -- STARTTLS and the TLS handshake ---------------------------------------------------------------

def test_reset_during_starttls_handshake_frees_the_connection_slot(node_factory: NodeFactory) -> None:
    node = node_factory(QUICK_STOP + "[smtp]\nmax_connections_per_ip = 1")
    for _ in range(2):
        c = connect(node, "smtp")
        assert c.cmd("STARTTLS")[0] == 220
        reset(c)
        time.sleep(0.05)
    assert banner_code(node, "smtp", within=0.5) == 220, "a client that reset twice is locked out for good"


def test_stall_during_starttls_handshake_frees_the_connection_slot(node_factory: NodeFactory) -> None:
    node = node_factory(QUICK_STOP + "[smtp]\nmax_connections_per_ip = 1\nidle_timeout = 0.2")
    c = connect(node, "smtp")
    assert c.cmd("STARTTLS")[0] == 220
    c.sock.settimeout(3.0)
    while c.sock.recv(4096):  # the sweeper ends it (writing its 421 in clear into the handshake)
        pass
    c.close()
    assert banner_code(node, "smtp", within=0.5) == 220


def test_garbage_or_fin_during_handshake_frees_the_slot(node_factory: NodeFactory) -> None:
    node = node_factory("[smtp]\nmax_connections_per_ip = 1")
    for finish in (b"\x16\x03\x01\x00\x05hello", b""):
        c = connect(node, "smtp")
        assert c.cmd("STARTTLS")[0] == 220
        if finish:
            c.send(finish)
            assert c.closed()
        c.close()
        assert banner_code(node, "smtp") == 220


def test_plaintext_sent_after_starttls_never_runs(node: Node) -> None:
    c = connect(node, "smtp")
    c.send(b"STARTTLS\r\n")
    time.sleep(0.05)  # a second segment, after the server took STARTTLS
    c.send(b"MAIL FROM:<injected@example.net>\r\n")
    assert c.reply()[0] == 220
    try:
        c.starttls(node.client_ssl)
    except (ssl.SSLError, ConnectionError):
        return  # the plaintext was fed to TLS as garbage: the handshake failed, fine
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@example.net>")[0] == 250, "the injected MAIL did not run"


def test_implicit_tls_handshake_abuse_does_not_leak_slots(node_factory: NodeFactory) -> None:
    node = node_factory("[smtp]\nmax_connections_per_ip = 1")
    for _ in range(2):
        raw = socket.create_connection(("127.0.0.1", node.port("submissions")))
        raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc" + b"\x00" * 40)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    c = RawClient(node.port("submissions"))
    _OPEN.append(c)
    c.sock = node.client_ssl.wrap_socket(c.sock, server_hostname="localhost")
    assert c.reply()[0] == 220


# -- AUTH abuse -----------------------------------------------------------------------------------

def test_auth_login_with_initial_response(node: Node) -> None:
    c = connect(node, "submissions")
    code, text = c.cmd("AUTH LOGIN " + b64("alice"))
    assert (code, text) == (334, "334 UGFzc3dvcmQ6")
    assert c.cmd(b64(PASSWORD))[0] == 235
    assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))[0] == 503, "already authenticated"


def test_auth_payload_edge_cases(node: Node) -> None:
    c = connect(node, "submissions")
    assert c.cmd("AUTH PLAIN =")[0] == 501  # empty initial response
    assert c.cmd("AUTH PLAIN " + b64("\0a\0b\0c"))[0] == 501  # four fields
    assert c.cmd("AUTH LOGIN " + b64("alice\0"))[0] == 334
    assert c.cmd(b64(PASSWORD))[0] == 535, "NUL in a LOGIN user name is refused, not truncated"
    assert c.cmd("AUTH PLAIN")[0] == 334
    code, text = c.cmd("A" * 13000)  # continuation line over RFC 4954's 12288
    assert code == 500 and "5.5.2" in text
    assert c.cmd(b"AUTH PLAIN \xff\xfe")[0] == 500  # invalid UTF-8
    assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))[0] == 235


def test_auth_not_offered_or_accepted_mid_transaction(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    c.cmd("STARTTLS")
    c.starttls(node.client_ssl)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250
    assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))[0] == 503


def test_auth_initial_response_over_12288_octets_is_too_long(node: Node) -> None:
    c = connect(node, "submissions")
    line = "AUTH PLAIN " + plain("alice", "x" * 10000)
    assert 12288 < len(line) + 2 < 16384  # over the limit, yet one TLS record: one read
    code, text = c.cmd(line)
    assert code == 500 and "5.5.2" in text, text


def test_own_successful_login_does_not_reset_failures_of_the_address(node_factory: NodeFactory) -> None:
    node = node_factory("[auth]\nslowdown_after = 3\nlockout_after = 4\nlockout_seconds = 60")
    codes: list[int] = []
    for _ in range(2):
        c = connect(node, "submissions")
        for _ in range(3):  # guesses against alice
            code, _text = c.cmd("AUTH PLAIN " + plain("alice", "guess-" + str(len(codes))))
            codes.append(code)
            if code != 535:
                break
        c.close()
        if 421 in codes:
            break
        login(node, user="bob").close()  # the attacker's own account
    assert 421 in codes, f"6 failed logins from one address never locked it out: {codes}"


def test_lockout_also_stops_auth_exchanges_opened_before_it(node_factory: NodeFactory) -> None:
    node = node_factory("[auth]\nslowdown_after = 2\nlockout_after = 2\nlockout_seconds = 60")
    waiting = connect(node, "submissions")
    assert waiting.cmd("AUTH PLAIN")[0] == 334  # opened while the address is in good standing
    guesser = connect(node, "submissions")
    assert guesser.cmd("AUTH PLAIN " + plain("alice", "guess-1"))[0] == 535
    assert guesser.cmd("AUTH PLAIN " + plain("alice", "guess-2"))[0] == 421  # locked out now
    code, text = waiting.cmd(plain("alice", PASSWORD))
    assert code == 421 and "4.7.0" in text, f"a locked-out address still learns a password is right: {text}"


def test_input_is_not_buffered_without_bound_while_auth_is_pending(node_factory: NodeFactory) -> None:
    node = node_factory(PLAINTEXT_AUTH + "[auth]\nslowdown_after = 0\nlockout_after = 9")
    c = connect(node, "alt")
    c.send(("AUTH PLAIN " + plain("alice", "wrong-password") + "\r\n").encode())
    c.sock.setblocking(False)
    chunk = b"x" * (1 << 20)
    sent, deadline = 0, time.monotonic() + 0.8  # the failed login is answered after ~1 s
    while sent < (128 << 20) and time.monotonic() < deadline:
        try:
            sent += c.sock.send(chunk)
        except BlockingIOError:
            time.sleep(0.005)
        except OSError as exc:
            assert exc.errno in (errno.ECONNRESET, errno.EPIPE)
            break
    c.close()
    # Kernel socket buffers on loopback hold a few tens of MiB at most; the rest is in the server.
    assert sent < (80 << 20), f"the server swallowed {sent >> 20} MiB while it was busy"


def test_failed_login_reasons_and_secrets_stay_out_of_the_log(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    c = connect(node, "submissions")
    secret = "S3cret-Login-Pass"
    assert c.cmd("AUTH LOGIN " + b64("alice"))[0] == 334
    assert c.cmd(b64(secret))[0] == 535
    assert c.cmd("AUTH PLAIN " + plain("alice", secret, authzid="bob"))[0] == 535
    assert c.cmd("AUTH LOGIN")[0] == 334
    assert c.cmd(b64("alice"))[0] == 334
    assert c.cmd(b64(secret + "!"))[0] == 535
    c.close()
    time.sleep(0.05)
    for leaked in (secret, b64(secret), b64(secret + "!"), plain("alice", secret, authzid="bob")):
        assert leaked not in caplog.text
    assert "AUTH failed" in caplog.text


# -- commands: bytes that should not be there -----------------------------------------------------

BAD_LINES = [
    b"\xff\xfe\xfd",  # not UTF-8
    b"EHLO \xc0\xaf",  # overlong UTF-8
    b"MAIL FROM:<\xed\xa0\x80@example.net>",  # an encoded surrogate
    b"NOOP\x00",
    b"\x00" * 100,
    b"EHLO a\rb",
    b"MAIL FROM:<a@example.net> SIZE=-1",
    b"MAIL FROM:<a@example.net> SIZE=",
    b"MAIL FROM:<a@example.net> BODY=BINARYMIME",
    b"MAIL FROM:<a@example.net> SMTPUTF8=yes",
    b"MAIL FROM:<\"unterminated@example.net>",
    b"MAIL FROM:<a@[300.1.1.1.1]>",
    b"MAIL FROM:<a@-bad-.example>",
    b"MAIL FROM:<a@example.net> SIZE=1 SIZE=x",
]


def test_bad_command_bytes_get_a_reply_and_the_session_goes_on(node: Node) -> None:
    c = connect(node, "smtp")
    for line in BAD_LINES:
        code, text = c.cmd(line)
        assert 500 <= code < 600, (line, text)
        assert c.cmd("NOOP")[0] == 250, line
    assert c.cmd("MAIL FROM:<a@example.net>")[0] == 250
    code, text = c.cmd("RCPT TO:<a@example.net> NOTIFY=NEVER")
    assert code == 555, text


def test_non_ascii_digit_in_size_is_a_syntax_error(node: Node) -> None:
    c = connect(node, "smtp")
    code, text = c.cmd("MAIL FROM:<a@example.net> SIZE=\u00b2")
    assert code == 501, text


def test_unicode_digits_in_size_do_not_stop_the_server(node: Node) -> None:
    # whatever the reply to SIZE=², other clients are served
    c = connect(node, "smtp")
    c.send("MAIL FROM:<a@example.net> SIZE=\u00b2\r\n".encode())
    c.sock.settimeout(2)
    with contextlib.suppress(ConnectionError, TimeoutError):
        c.reply()
    other = connect(node, "smtp")
    assert other.cmd("NOOP")[0] == 250


def test_long_lines_are_discarded_without_buffering(node: Node) -> None:
    c = connect(node, "smtp")
    c.send(b"NOOP " + b"x" * (1 << 20))  # a megabyte, no end of line yet
    time.sleep(0.05)
    code, text = c.cmd(b"tail")
    assert code == 500 and "5.5.2" in text
    assert c.cmd("NOOP")[0] == 250
    code, text = c.cmd("NOOP " + "x" * 506)  # 513 octets with CRLF
    assert code == 500, text
    assert c.cmd("NOOP " + "x" * 505)[0] == 250  # exactly 512


def test_many_errors_interleaved_with_good_commands_still_disconnect(node: Node) -> None:
    c = connect(node, "smtp")
    codes: list[int] = []
    for _ in range(25):
        c.send(b"BOGUS\r\nNOOP\r\n")
        try:
            codes.append(c.reply()[0])
            codes.append(c.reply()[0])
        except ConnectionError:
            break
    assert 421 in codes
    assert c.closed()


ODD_HELOS = ["[127.0.0.1]", "a(b)c;d", "\u00fcber.example", "x" * 255, '"q"<x>']


def test_odd_but_printable_helo_cannot_add_header_lines(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp", ehlo=False)
    for helo in ODD_HELOS:
        assert c.cmd("EHLO " + helo)[0] == 250
        envelope(c)
        assert c.cmd(helo.encode() + b"\r\n.")[0] == 250
    c.close()
    stored = node.stored()
    assert len(stored) == len(ODD_HELOS)
    for row in stored:
        helo = row["helo"]
        assert row["body"] == helo.encode() + b"\r\n"
        trace = row["trace_headers"]
        lines = trace.split(b"\r\n")
        assert lines[0] == b"Received: from " + helo.encode() + b" ([127.0.0.1])"
        assert lines[-1] == b"" and all(line.startswith(b"\t") for line in lines[1:3]), lines
        assert b"\n" not in trace.replace(b"\r\n", b"") and b"\r" not in trace.replace(b"\r\n", b"")


def test_bad_helo_is_refused(node: Node) -> None:
    c = connect(node, "smtp", ehlo=False)
    for helo in ("a" * 256, "a b", "a\tb", "a\x7fb", "a\x1bb", "a\x0cb"):
        assert c.cmd("EHLO " + helo)[0] == 501, repr(helo)
        assert c.cmd("MAIL FROM:<a@example.net>")[0] == 503, "a refused EHLO leaves no HELO name"


# -- relay ----------------------------------------------------------------------------------------

MORE_RELAY_TRICKS = [
    "victim@example.com.",
    "victim@[IPv6:::1]",
    "VICTIM@EXAMPLE.COM",
    "@a,@b:victim@example.com",
    "victim%example.com%mx.mailrelay.test@mx.mailrelay.test",
    '"victim@example.com"',
    "mx.mailrelay.test!example.com!victim",
    '"victim@example.com"@[127.0.0.1]',
]


def test_more_relay_tricks_and_a_forged_auth_parameter(node: Node) -> None:
    c = connect(node, "smtp")
    assert c.cmd("MAIL FROM:<spam@example.net> AUTH=<alice@example.net>")[0] == 250
    for rcpt in MORE_RELAY_TRICKS:
        code, text = c.cmd(f"RCPT TO:<{rcpt}>")
        assert code in (501, 553, 554), (rcpt, text)
    assert c.cmd("DATA")[0] == 554
    c.close()
    assert node.stored() == []


def test_failed_auth_does_not_open_the_relay(node: Node) -> None:
    c = connect(node, "smtp")
    c.cmd("STARTTLS")
    c.starttls(node.client_ssl)
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN " + plain("alice", "wrong-password"))[0] == 535
    assert c.cmd("MAIL FROM:<alice@example.net>")[0] == 250
    assert c.cmd("RCPT TO:<victim@example.com>")[0] == 554


# -- limits at their exact edge -------------------------------------------------------------------

def test_message_exactly_at_the_size_limit_in_one_write(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_message_size = 1024")
    body = b"x" * 1022 + b"\r\n"
    c = connect(node, "smtp")
    envelope(c)
    assert c.cmd(body + b".")[0] == 250
    envelope(c)
    code, text = c.cmd(b"y" + body + b".")
    assert code == 552 and "5.3.4" in text
    assert c.cmd("MAIL FROM:<a@example.net> SIZE=1024")[0] == 250
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("MAIL FROM:<a@example.net> SIZE=1025")[0] == 552
    c.close()
    assert [len(bytes(s["body"])) for s in node.stored()] == [1024]


def test_message_exactly_at_the_size_limit_split_before_the_final_crlf(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_message_size = 1024")
    c = connect(node, "smtp")
    envelope(c)
    c.send(b"x" * 1022 + b"\r\n.")
    time.sleep(0.02)
    c.send(b"\r\n")
    code, text = c.reply()
    assert code == 250, text


def test_oversized_message_with_terminator_split_everywhere(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_message_size = 1024")
    c = connect(node, "smtp")
    tail = b"\r\n.\r\n"
    for i in range(len(tail) + 1):
        envelope(c)
        c.send(b"z" * 3000 + tail[:i])
        time.sleep(0.002)
        c.send(tail[i:])
        code, text = c.reply()
        assert code == 552 and "5.3.4" in text, (i, text)
    assert c.cmd("NOOP")[0] == 250
    assert node.stored() == []


def test_never_ending_data_is_refused_once_it_ends(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_message_size = 4096")
    c = connect(node, "smtp")
    envelope(c)
    for _ in range(64):  # 4 MiB against a 4 KiB limit
        c.send(b"line\r\n" * 10922 + b"lin")
    c.send(b"e\r\n.\r\n")
    code, text = c.reply()
    assert code == 552 and "5.3.4" in text
    assert c.cmd("NOOP")[0] == 250


def test_recipients_pipelined_past_the_limit(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED + "[smtp]\nmax_recipients = 3")
    c = connect(node, "smtp")
    c.send(b"MAIL FROM:<a@example.net>\r\n" + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(5))
           + b"DATA\r\n")
    codes = [c.reply()[0] for _ in range(7)]
    assert codes == [250, 250, 250, 250, 452, 452, 354]
    assert c.cmd("body\r\n.")[0] == 250
    [stored] = node.stored()
    assert sorted(r["address"] for r in stored["recipients"]) == ["r0@example.com", "r1@example.com",
                                                                  "r2@example.com"]


def test_ipv6_peer_is_traced_and_limited(node_factory: NodeFactory) -> None:
    node = node_factory(PLAINTEXT_AUTH + '[listener.alt]\nlisten = ["[::1]:0"]\n'
                        "[smtp]\nmax_connections_per_ip = 1")
    c = connect(node, "alt", host="::1")
    assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))[0] == 235
    second = RawClient(node.port("alt"), host="::1")
    _OPEN.append(second)
    code, text = second.reply()
    assert code == 421 and "4.7.0" in text
    envelope(c)
    assert c.cmd("v6\r\n.")[0] == 250
    c.close()
    [stored] = node.stored()
    assert stored["client_ip"] == "::1"
    assert bytes(stored["trace_headers"]).startswith(b"Received: from client.test ([IPv6:::1])")


def test_a_single_leading_dot_is_removed(node_factory: NodeFactory) -> None:
    node = node_factory(TRUSTED)
    c = connect(node, "smtp")
    envelope(c)
    assert c.cmd("a\r\n.b\r\n.")[0] == 250
    [stored] = node.stored()
    assert stored["body"] == b"a\r\nb\r\n"
