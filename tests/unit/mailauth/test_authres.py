"""Rendering Authentication-Results and stripping forged ones (RFC 8601)."""

from __future__ import annotations

import pytest

from mailrelay.mailauth.authres import authentication_results, strip_forged
from mailrelay.mailauth.dkimverify import DKIMResult
from mailrelay.mailauth.dmarc import DMARCResult

PASS = DKIMResult("pass", "example.com", "sel", "rsa-sha256", "abcd1234")


def test_typical_header() -> None:
    header = authentication_results(
        "mx.example.net", spf=("pass", "example.com", "mailfrom"), dkim=[PASS],
        dmarc=DMARCResult("pass", "reject", "example.com", "example.com"))
    assert header == (b"Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=example.com;\r\n"
                      b" dkim=pass header.d=example.com header.s=sel header.b=abcd1234;\r\n"
                      b" dmarc=pass (p=reject) header.from=example.com\r\n")


def test_no_signature_is_dkim_none_and_missing_methods_are_left_out() -> None:
    assert authentication_results("mx.example.net", spf=None, dkim=[], dmarc=None) == \
        b"Authentication-Results: mx.example.net; dkim=none\r\n"


def test_helo_scope_iprev_and_failure_comments() -> None:
    header = authentication_results(
        "mx.example.net", spf=("none", "client.example.org", "helo"),
        dkim=[DKIMResult("fail", "example.com", "sel", "rsa-sha256", "abcd1234", "body hash mismatch")],
        dmarc=DMARCResult("fail", "quarantine", "example.com", "example.com", "no aligned SPF or DKIM pass"),
        iprev=("pass", "192.0.2.1", "client.example.org"))
    # a resinfo that does not fit on the current line starts a new one, and breaks between
    # its words only when it does not fit on a line of its own
    assert header.decode().split("\r\n") == [
        "Authentication-Results: mx.example.net;",
        " iprev=pass (client.example.org) policy.iprev=192.0.2.1;",
        " spf=none smtp.helo=client.example.org;",
        " dkim=fail (body hash mismatch) header.d=example.com header.s=sel",
        " header.b=abcd1234;",
        " dmarc=fail (p=quarantine; no aligned SPF or DKIM pass)",
        " header.from=example.com",
        ""]


def test_every_line_fits_and_continues_with_white_space() -> None:
    long = DKIMResult("pass", "a-rather-long-subdomain.of-a-rather-long-domain.example.com",
                      "selector-2024-01", "rsa-sha256", "abcd1234", identity="@example.com")
    header = authentication_results("mx.example.net", spf=("pass", "bounce@example.com", "mailfrom"),
                                    dkim=[long, PASS], dmarc=None)
    lines = header.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:-1])
    assert b"smtp.mailfrom=bounce@example.com;" in header and b"header.i=@example.com" in header


@pytest.mark.parametrize(("value", "shown"), [
    ("ab/cd+ef", b'header.b="ab/cd+ef"'),  # "/" is a tspecial: quoted (RFC 6008 §4)
    ("ab+cdefg", b"header.b=ab+cdefg"),
    ('x"y\\z', b'header.b="x\\"y\\\\z"'),
])
def test_values_with_specials_are_quoted(value: str, shown: bytes) -> None:
    sig = DKIMResult("pass", "example.com", "sel", "rsa-sha256", value)
    assert shown in authentication_results("mx", spf=None, dkim=[sig], dmarc=None)


def test_hostile_values_cannot_add_lines_or_resinfos() -> None:
    sig = DKIMResult("pass", "evil.test;\r\nX-Spam: no; dkim=pass", "s (x)", "rsa-sha256", "abcd1234",
                     comment="a) dkim=pass (b\r\n")
    header = authentication_results("mx", spf=None, dkim=[sig], dmarc=None)
    unfolded = header[:-2].replace(b"\r\n ", b" ")
    assert b"\r" not in unfolded and b"\n" not in unfolded
    assert b'header.d="evil.test;X-Spam: no; dkim=pass"' in unfolded
    assert b"(a\\) dkim=pass \\(b)" in unfolded
    assert b'header.s="s (x)"' in unfolded


# -- strip_forged ------------------------------------------------------------------------------

BODY = b"\r\nAuthentication-Results: mx.example.net; this is the body\r\n"


def test_forged_folded_field_is_removed_and_everything_else_kept() -> None:
    kept_before = b"Received: from a by b; Tue, 1 Jan 2030 00:00:00 +0000\r\n"
    forged = (b"Authentication-Results: MX.Example.NET;\r\n"
              b"\tspf=pass smtp.mailfrom=bank.test;\r\n"
              b"  dkim=pass header.d=bank.test\r\n")
    others = (b"Authentication-Results: mx.other.test; dkim=fail\r\n"
              b"ARC-Authentication-Results: i=1; mx.example.net; dkim=pass\r\n"
              b"X-Authentication-Results: mx.example.net; spf=pass\r\n")
    rest = b"From: a@bank.test\r\nSubject: hi\r\n"
    message = kept_before + forged + others + rest + BODY
    assert strip_forged(message, "mx.example.net") == kept_before + others + rest + BODY


@pytest.mark.parametrize("field", [
    b"Authentication-Results: mx.example.net; none\r\n",
    b"authentication-results :mx.example.net 1; spf=pass\r\n",  # space before the colon; version
    b"Authentication-Results: (our host) mx.example.net.;\r\n spf=pass\r\n",
    b'Authentication-Results: "mx.example.net"; spf=pass\r\n',
    b"Authentication-Results:\r\n mx.example.net;\r\n spf=pass\r\n",
])
def test_every_spelling_of_our_id_is_removed(field: bytes) -> None:
    message = b"From: a@b.test\r\n" + field + b"Subject: s\r\n" + BODY
    assert strip_forged(message, "mx.example.net") == b"From: a@b.test\r\nSubject: s\r\n" + BODY


@pytest.mark.parametrize("field", [
    b"Authentication-Results: mx.example.net.evil.test; spf=pass\r\n",
    b"Authentication-Results: evil.mx.example.net; spf=pass\r\n",
    b"Authentication-Results: (mx.example.net) other.test; spf=pass\r\n",
])
def test_other_ids_are_kept(field: bytes) -> None:
    message = b"From: a@b.test\r\n" + field + BODY
    assert strip_forged(message, "mx.example.net") is message


def test_lf_endings_and_forged_last_field_without_body() -> None:
    message = b"From: a@b.test\nAuthentication-Results: mx.example.net;\n spf=pass"
    assert strip_forged(message, "mx.example.net") == b"From: a@b.test\n"
    lf = b"From: a@b.test\nAuthentication-Results: mx.example.net; none\nSubject: s\n\nbody\n"
    assert strip_forged(lf, "mx.example.net") == b"From: a@b.test\nSubject: s\n\nbody\n"


def test_body_is_never_scanned() -> None:
    message = b"From: a@b.test\r\n" + BODY + b"Authentication-Results: mx.example.net; x\r\n"
    assert strip_forged(message, "mx.example.net") is message
