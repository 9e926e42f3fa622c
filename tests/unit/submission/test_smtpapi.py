"""smtpapi.inspect: Message-ID, Subject and X-SMTPAPI from the header section only."""

from __future__ import annotations

import json
import logging
import time

import pytest

from mailrelay.submission.smtpapi import header_end, inspect

HEAD = b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: hello\r\nMessage-ID: <m1@sender.test>\r\n"
BODY = b"\r\nX-SMTPAPI: {\"category\": \"not-a-header\"}\r\nSubject: body line\r\n"


def test_absent_header_leaves_the_message_untouched() -> None:
    msg = HEAD + BODY
    got = inspect(msg)
    assert got.body is msg
    assert got.message_id == "<m1@sender.test>"
    assert got.subject == "hello"
    assert got.tags is None


def test_valid_header_is_parsed_and_removed_byte_exactly() -> None:
    api = b'X-SMTPAPI: {"category": ["welcome", "eu"], "unique_args": {"user": "42", "n": 7}}\r\n'
    msg = b"From: a@b.test\r\n" + api + b"Subject: hi\r\n" + BODY
    got = inspect(msg)
    assert got.body == b"From: a@b.test\r\nSubject: hi\r\n" + BODY
    assert got.tags == {"category": ["welcome", "eu"], "unique_args": {"user": "42", "n": 7}}
    assert got.subject == "hi"


def test_folded_header_over_several_lines() -> None:
    api = (b'x-smtpapi: {"category":\r\n  "news",\r\n\t"unique_args": {"campaign":\r\n "spring"}}\r\n')
    msg = HEAD + api + BODY
    got = inspect(msg)
    assert got.tags == {"category": ["news"], "unique_args": {"campaign": "spring"}}
    assert got.body == HEAD + BODY


def test_last_field_before_the_body_and_header_only_messages() -> None:
    msg = b"Subject: x\r\nX-SMTPAPI: {\"category\": \"c\"}\r\n\r\nbody\r\n"
    assert inspect(msg).body == b"Subject: x\r\n\r\nbody\r\n"
    only = b"Subject: x\r\nX-SMTPAPI: {\"category\": \"c\"}"
    got = inspect(only)
    assert got.body == b"Subject: x\r\n" and got.tags == {"category": ["c"]}


def test_bare_lf_message() -> None:
    msg = b"Subject: x\nX-SMTPAPI: {\"category\": \"c\"}\n\nbody\n"
    got = inspect(msg)
    assert got.body == b"Subject: x\n\nbody\n" and got.tags == {"category": ["c"]}


@pytest.mark.parametrize("value", [
    b"{not json",
    b"[1, 2]",
    b'{"category": 5}',
    b'{"category": ["a", 3]}',
    b'{"category": ' + json.dumps([f"c{i}" for i in range(11)]).encode() + b"}",
    b'{"category": "' + b"x" * 256 + b'"}',
    b'{"unique_args": ["a"]}',
    b'{"unique_args": {"a": {"nested": 1}}}',
    b'{"unique_args": {"a": true}}',
    b'{"unique_args": {"a": NaN}}',
    b'{"unique_args": {"a": "' + b"x" * 10_001 + b'"}}',
    b'{"category": "' + b"x" * 40_000 + b'"}',
    b"[" * 100_000,
])
def test_invalid_header_is_removed_ignored_and_warned_once(value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    msg = HEAD + b"X-SMTPAPI: " + value + b"\r\n" + BODY
    with caplog.at_level(logging.WARNING, logger="mailrelay.submission"):
        got = inspect(msg)
    assert got.tags is None
    assert got.body == HEAD + BODY
    assert got.message_id == "<m1@sender.test>"
    assert len([r for r in caplog.records if "X-SMTPAPI" in r.getMessage()]) == 1


def test_two_fields_are_both_removed_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    msg = b'X-SMTPAPI: {"category": "a"}\r\n' + HEAD + b'X-SMTPAPI: {"category": "b"}\r\n' + BODY
    got = inspect(msg)
    assert got.body == HEAD + BODY and got.tags is None
    assert "2 X-SMTPAPI fields" in caplog.text


def test_other_keys_are_dropped_and_empty_tags_are_none() -> None:
    got = inspect(HEAD + b'X-SMTPAPI: {"to": ["x@y.test"], "filters": {}}\r\n' + BODY)
    assert got.tags is None and got.body == HEAD + BODY
    got = inspect(HEAD + b'X-SMTPAPI: {"category": "a", "sub": {"-name-": ["x"]}}\r\n' + BODY)
    assert got.tags == {"category": ["a"]}


def test_subject_is_decoded_and_bounded_and_message_id_unfolded() -> None:
    msg = (b"Subject: =?utf-8?q?caf=C3=A9?= au\r\n lait\r\nMessage-ID:\r\n <long@id.test>\r\n\r\nx")
    got = inspect(msg)
    assert got.subject == "café au lait"
    assert got.message_id == "<long@id.test>"
    got = inspect(b"Subject: " + b"s" * 5000 + b"\r\nMessage-ID: <" + b"i" * 1000 + b">\r\n\r\n")
    assert got.subject is not None and len(got.subject) == 500
    assert got.message_id is None, "an over-long Message-ID is not kept"
    assert inspect(b"Subject: a\x01b\r\n\r\n").subject == "a b"


def test_only_the_header_section_is_read() -> None:
    assert header_end(b"\r\nbody") == 0
    assert header_end(b"A: b\r\n\r\nc\n\nd") == len(b"A: b\r\n")
    got = inspect(b"A: b\r\n\r\nMessage-ID: <x@y>\r\nX-SMTPAPI: {}\r\n")
    assert got.message_id is None and got.tags is None


def test_cost_per_message_without_the_header() -> None:
    """Runs for every accepted message: must stay in the microseconds (measured ~8 µs)."""
    msg = HEAD + b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nContent-Type: text/plain\r\n" + b"\r\n" + b"x" * 70 * 26
    assert 1900 < len(msg) < 2200
    n = 5000
    start = time.process_time()
    for _ in range(n):
        inspect(msg)
    per = (time.process_time() - start) / n
    assert per < 100e-6, f"{per * 1e6:.1f} µs per message"


def test_subjects_email_header_cannot_decode_or_would_take_minutes() -> None:
    # Bad base64 raises HeaderParseError, which is no ValueError: kept as written.
    assert inspect(b"Subject: =?utf-8?b?a?=\r\n\r\nx").subject == "=?utf-8?b?a?="
    # email.header's cost is quadratic: a 4 MB Subject of encoded words took minutes.
    msg = b"Subject: " + b"=?utf-8?q?a?= " * 300_000 + b"\r\n\r\nx"
    start = time.process_time()
    got = inspect(msg)
    assert time.process_time() - start < 1.0
    assert got.subject == "a" * 500
