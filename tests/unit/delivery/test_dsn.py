"""RFC 3464 DSNs: golden bytes, the structure a mail reader parses back, and hostile inputs.

Golden files are stored with LF line endings (so git settings cannot change them) and compared
after LF → CRLF; the output itself is checked separately to contain no bare LF. Regenerate with
MAILRELAY_REGEN_GOLDEN=1 after an intended change, and review the diff.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest

from mailrelay.delivery.classify import classify_error, classify_reply
from mailrelay.delivery.dsn import (
    MAX_ORIGINAL_HEADERS,
    SUBJECT_DELAYED,
    SUBJECT_FAILED,
    FailedRecipient,
    build_dsn,
    header_block,
    notify_wants,
    should_send_dsn,
)

GOLDEN = Path(__file__).parents[2] / "golden"
T0 = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000

ORIGINAL = (b"Received: from client.test (client.test [192.0.2.7])\r\n"
            b"\tby mx.example.org (mailrelay) with ESMTPSA id 0B4XKQ2NP7HGT3CV;\r\n"
            b"\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
            b"From: Alice <alice@example.org>\r\n"
            b"To: bob@example.net, carol@example.com\r\n"
            b"Subject: Quarterly numbers\r\n"
            b"Message-ID: <q3@example.org>\r\n"
            b"\r\n"
            b"The body, which a DSN never returns.\r\n")

BOB = FailedRecipient(
    address="bob@example.net", status="5.1.1", action="failed",
    diagnostic="550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in "
               "virtual mailbox table",
    remote_mta="mx1.example.net", last_attempt=T0 + 60)
CAROL_EXPIRED = FailedRecipient(
    address="carol@example.com", status="4.4.7", action="failed",
    diagnostic="message expired after 5 days; last error: connection refused",
    remote_mta=None, last_attempt=T0 + 5 * 86400)
DAN_DELAYED = FailedRecipient(
    address="dan@example.com", status="4.7.1", action="delayed",
    diagnostic="451 4.7.1 Greylisted, please try again later", remote_mta="mx.example.com",
    last_attempt=T0 + 3600)


def dsn(recipients: list[FailedRecipient], **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "reporting_mta": "mx.example.org", "original_sender": "alice@example.org",
        "original_queue_id": "0B4XKQ2NP7HGT3CV", "arrival": T0, "recipients": recipients,
        "original_headers": header_block(ORIGINAL), "now": T0 + 5 * 86400 + 1,
        "message_id_domain": "mx.example.org", "token": "fixedtoken"}
    args.update(kw)
    return build_dsn(**args)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple[EmailMessage, list[Message], EmailMessage]:
    text, status, headers = msg.iter_parts()
    blocks = status.get_payload()
    assert isinstance(blocks, list) and isinstance(text, EmailMessage)
    assert isinstance(headers, EmailMessage)
    return text, blocks, headers


def assert_wire_clean(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert b"\0" not in data


@pytest.mark.parametrize(("name", "recipients"), [
    ("dsn_failed.eml", [BOB, CAROL_EXPIRED]),
    ("dsn_delayed.eml", [DAN_DELAYED]),
])
def test_golden(name: str, recipients: list[FailedRecipient]) -> None:
    out = dsn(recipients)
    assert_wire_clean(out)
    path = GOLDEN / name
    if os.environ.get("MAILRELAY_REGEN_GOLDEN") == "1":
        path.write_bytes(out.replace(b"\r\n", b"\n"))
    assert out == path.read_bytes().replace(b"\n", b"\r\n")


def test_structure_as_a_mail_reader_sees_it() -> None:
    data = dsn([BOB, CAROL_EXPIRED, DAN_DELAYED])
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert b"\r\nTo: <alice@example.org>\r\n" in data
    assert msg["Subject"] == SUBJECT_FAILED  # one failure is enough for the bounce subject
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<dsn.fixedtoken.0B4XKQ2NP7HGT3CV@mx.example.org>"
    assert msg["Date"].datetime.timestamp() == T0 + 5 * 86400 + 1
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]

    text, blocks, headers = parts(msg)
    per_message, bob, carol, dan = blocks
    assert per_message["Reporting-MTA"] == "dns; mx.example.org"
    assert per_message["X-Mailrelay-Queue-ID"] == "0B4XKQ2NP7HGT3CV"
    assert per_message["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert dict(bob.items()) == {
        "Final-Recipient": "rfc822; bob@example.net", "Action": "failed", "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.net",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: "
                           "User unknown in virtual mailbox table",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 22:14:20 +0000"}
    # Our own text is not an SMTP reply: a private diagnostic type (RFC 3464 §2.3.6).
    assert carol["Diagnostic-Code"] == ("X-mailrelay; message expired after 5 days; last error: "
                                        "connection refused")
    assert "Remote-MTA" not in carol and carol["Action"] == "failed"
    assert (dan["Action"], dan["Status"]) == ("delayed", "4.7.1")

    body = text.get_content()
    assert "bob@example.net>: host mx1.example.net said: 550 5.1.1" in body
    assert "will not try again" in body and "will keep trying" in body
    original = headers.get_content()
    assert "Subject: Quarterly numbers" in original and "never returns" not in original


def test_only_delays_get_the_delay_subject() -> None:
    msg = parse(dsn([DAN_DELAYED]))
    assert msg["Subject"] == SUBJECT_DELAYED
    assert "will not try again" not in parts(msg)[0].get_content()


def test_verdicts_feed_a_dsn() -> None:
    """What the classifier writes is what the DSN builder expects as `diagnostic`."""
    remote = classify_reply(550, "5.1.1 No such user\n5.1.1 see https://help.example")
    local = classify_error(ConnectionRefusedError(111, "Connection refused"))
    msg = parse(dsn([FailedRecipient("a@example.net", remote.status, "failed", remote.diagnostic,
                                     "mx.example.net", T0),
                     FailedRecipient("b@example.net", local.status, "delayed", local.diagnostic,
                                     None, T0)]))
    _, (_, a, b), _ = parts(msg)
    assert a["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user see https://help.example"
    assert b["Diagnostic-Code"].startswith("X-mailrelay; connection refused")
    assert b["Status"] == "4.4.1"


def test_optional_fields_are_left_out() -> None:
    bare = FailedRecipient("x@example.net", "5.0.0", "failed", None, None, None)
    _, (_, block), _ = parts(parse(dsn([bare])))
    assert dict(block.items()) == {"Final-Recipient": "rfc822; x@example.net", "Action": "failed",
                                   "Status": "5.0.0"}


def test_non_ascii_addresses() -> None:
    r = FailedRecipient("dörte+tag=1@bücher.example", "5.1.1", "failed",
                        "550 5.1.1 Empfänger unbekannt", "mx.bücher.example", T0)
    out = dsn([r], original_sender="jörg@example.org")
    assert_wire_clean(out)
    msg = parse(out)
    text, (_, block), _ = parts(msg)
    # RFC 6533 §3: utf-8-addr-xtext keeps the delivery-status part 7-bit.
    assert block["Final-Recipient"] == r"utf-8; d\x{F6}rte\x{2B}tag\x{3D}1@b\x{FC}cher.example"
    assert block["Diagnostic-Code"] == r"smtp; 550 5.1.1 Empf\x{E4}nger unbekannt"
    assert block["Remote-MTA"] == r"dns; mx.b\x{FC}cher.example"
    start = out.index(b"message/delivery-status")
    assert out[start:out.index(b"--=_dsn_fixedtoken", start)].isascii()
    # People read the real thing, in UTF-8.
    assert text.get_content_charset() == "utf-8"
    assert "<dörte+tag=1@bücher.example>: host mx.bücher.example said:" in text.get_content()
    assert "\r\nTo: <jörg@example.org>\r\n".encode() in out  # RFC 6532: raw UTF-8


def test_hostile_inputs_keep_the_message_well_formed() -> None:
    huge_word = "A" * 5000
    r = FailedRecipient("bob@example.net", "5.7.1", "failed",
                        f"550 5.7.1 {huge_word} spaced " + "word " * 400, "mx.example.net", T0)
    headers = (b"Subject: bare\nLF\rCR\r\n" + b"X-Long: " + b"y" * 5000 + b"\r\n"
               + b"X-Nul: a\0b\r\n" + b"X-Many: z\r\n" * 20000)
    out = dsn([r], original_headers=headers)
    assert_wire_clean(out)
    msg = parse(out)
    _, (_, block), original = parts(msg)
    assert block["Diagnostic-Code"].startswith("smtp; 550 5.7.1 AAAA")
    assert block["Status"] == "5.7.1"  # the folded field did not swallow its neighbours
    returned = original.get_content()
    assert len(returned.encode()) <= MAX_ORIGINAL_HEADERS
    assert "Subject: bare" in returned and "X-Nul: ab" in returned


def test_original_headers_stop_at_the_first_empty_line() -> None:
    out = dsn([BOB], original_headers=ORIGINAL)  # a caller passed the whole message
    assert b"never returns" not in out


@pytest.mark.parametrize("field", [
    {"address": "bob@example.net\r\nBcc: victim@example.com"},
    {"remote_mta": "mx.example.net\r\nX-Evil: 1"},
    {"remote_mta": "two words"},
    {"status": "5.1"},
    {"status": "6.1.1"},
])
def test_header_injection_and_bad_fields_are_refused(field: dict[str, str]) -> None:
    values = {"address": BOB.address, "status": BOB.status, "action": BOB.action,
              "diagnostic": BOB.diagnostic, "remote_mta": BOB.remote_mta,
              "last_attempt": BOB.last_attempt} | field
    with pytest.raises(ValueError):
        dsn([FailedRecipient(**values)])  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [
    {"original_sender": "alice@example.org\nBcc: x@y"},
    {"reporting_mta": "mx example"},
    {"original_queue_id": "id with space"},
    {"token": "bad token"},
])
def test_bad_arguments_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dsn([BOB], **kw)


def test_no_recipients_no_dsn() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        dsn([])


def test_random_token_and_boundary_collision() -> None:
    a, b = dsn([BOB], token=None), dsn([BOB], token=None)
    ids = [parse(x)["Message-ID"] for x in (a, b)]
    assert ids[0] != ids[1] and all(re.fullmatch(r"<dsn\.[0-9a-f]{24}\.0B4XKQ2NP7HGT3CV@mx\.example\.org>", i)
                                    for i in ids)
    with pytest.raises(ValueError, match="boundary"):
        dsn([BOB], original_headers=b"X-Trick: --=_dsn_fixedtoken\r\n")


@pytest.mark.parametrize(("sender", "send"), [
    ("", False), ("<>", False), (" <> ", False),
    ("alice@example.org", True), ("MAILER-DAEMON@example.org", True), ("<bob@example.net>", True),
])
def test_should_send_dsn(sender: str, send: bool) -> None:
    assert should_send_dsn(sender) is send


def test_notify_wants() -> None:
    assert notify_wants(None, "failed") and notify_wants(None, "delayed")
    assert not notify_wants("NEVER", "failed") and not notify_wants("never", "delayed")
    assert notify_wants("FAILURE", "failed") and not notify_wants("FAILURE", "delayed")
    assert notify_wants("SUCCESS,DELAY", "delayed") and not notify_wants("SUCCESS,DELAY", "failed")


def test_header_block() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == b"A: 1\r\nB: 2\r\n"
    assert header_block(b"A: 1\nB: 2\n\nbody\n") == b"A: 1\nB: 2\n"
    assert header_block(b"A: 1\r\n") == b"A: 1\r\n"
