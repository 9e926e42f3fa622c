"""DMARC pieces without DNS: record parsing, the From domain, alignment, the action."""

from __future__ import annotations

import pytest

from mailrelay.mailauth.dmarc import (
    DMARCRecord,
    DMARCRecordError,
    DMARCResult,
    aligned,
    dmarc_action,
    from_domain,
    is_dmarc_record,
    organizational_domain,
    parse_record,
)


def test_parse_full_record() -> None:
    record = parse_record("v=DMARC1; p=Reject; sp=none; adkim=s; aspf=r; pct=50; "
                          "rua=mailto:a@example.com,mailto:b@example.com; fo=1; unknown=x;")
    assert record == DMARCRecord("reject", "none", "s", "r", 50, ("mailto:a@example.com", "mailto:b@example.com"))


def test_defaults() -> None:
    assert parse_record("v = DMARC1;p=none") == DMARCRecord("none")


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1; p=bounce", "v=DMARC1; p=none; sp=drop",
                                  "v=DMARC1; p=none; pct=101", "v=DMARC1; p=none; adkim=x", "v=DMARC1; p"])
def test_invalid_records(text: str) -> None:
    with pytest.raises(DMARCRecordError):
        parse_record(text)


@pytest.mark.parametrize(("text", "ok"), [("v=DMARC1; p=none", True), ("v=DMARC1", True),
                                          ("v=dmarc1; p=none", False), ("p=none; v=DMARC1", False),
                                          ("v=DMARC10; p=none", False), ("v=spf1 -all", False)])
def test_version_must_come_first(text: str, ok: bool) -> None:
    assert is_dmarc_record(text) is ok


@pytest.mark.parametrize(("header", "domain", "problem"), [
    (b"From: Alice <Alice@Example.COM>\r\n", "example.com", ""),
    (b"From: \"Doe, Jane\" <jane@example.com>\r\n", "example.com", ""),
    (b"From:\r\n Alice\r\n <alice@sub.example.com>\r\n", "sub.example.com", ""),
    (b"From: a@example.com, b@example.org\r\n", None, "several addresses in From"),
    (b"From: a@example.com\r\nFrom: b@example.org\r\n", None, "several From fields"),
    (b"Sender: a@example.com\r\n", None, "no From field"),
    (b"From: undisclosed\r\n", None, "no domain in the From address"),
    (b"From: a@b\xc3\xbccher.example\r\n", "xn--bcher-kva.example", ""),
])
def test_from_domain(header: bytes, domain: str | None, problem: str) -> None:
    found = from_domain(header + b"Subject: s\r\n\r\nFrom: body@not.header\r\n")
    assert (found.domain, found.problem) == (domain, problem)


def test_organizational_domain() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("Mail.Example.COM.") == "example.com"
    assert organizational_domain("sub.example.test") == "example.test"
    assert organizational_domain("co.uk") == "co.uk"


def test_alignment() -> None:
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert aligned("EXAMPLE.com.", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "example.com", "r")


@pytest.mark.parametrize(("result", "policy", "monitor", "enforce"), [
    ("fail", "reject", "accept", "reject"),
    ("fail", "quarantine", "accept", "quarantine"),
    ("fail", "none", "accept", "accept"),
    ("pass", "reject", "accept", "accept"),
    ("temperror", None, "accept", "accept"),
    ("none", None, "accept", "accept"),
])
def test_action(result: str, policy: str | None, monitor: str, enforce: str) -> None:
    r = DMARCResult(result, policy, "example.com", "example.com")  # type: ignore[arg-type]
    assert (dmarc_action(r, "monitor", sample=0.0), dmarc_action(r, "enforce", sample=0.0)) == (monitor, enforce)


def test_a_from_field_too_long_or_too_nested_is_not_parsed() -> None:
    many = b"From: " + b"\r\n ".join([b"a@example.com,"] * 100_000) + b"\r\n\r\nbody\r\n"
    assert from_domain(many).problem == "From field too long"
    assert from_domain(b"From: " + b"(" * 3000 + b"a@example.com\r\n\r\n").problem == "unreadable From field"


@pytest.mark.parametrize(("record", "sample", "action"), [
    ("v=DMARC1; p=reject; pct=100", 0.0, "reject"),
    ("v=DMARC1; p=reject; pct=100", 0.999999, "reject"),
    ("v=DMARC1; p=reject; pct=0", 0.0, "quarantine"),  # not selected: the next lower policy
    ("v=DMARC1; p=quarantine; pct=0", 0.0, "accept"),
    ("v=DMARC1; p=quarantine; pct=100", 0.999999, "quarantine"),
    ("v=DMARC1; p=reject; pct=30", 0.29, "reject"),  # selected: the draw falls in the first 30 %
    ("v=DMARC1; p=reject; pct=30", 0.30, "quarantine"),
    ("v=DMARC1; p=reject", 0.999999, "reject"),  # pct defaults to 100
])
def test_pct_samples_messages_for_the_policy(record: str, sample: float, action: str) -> None:
    # RFC 7489 §6.6.4: a message not selected by pct= gets the next lower policy.
    parsed = parse_record(record)
    r = DMARCResult("fail", parsed.p, "example.com", "example.com", record=parsed)
    assert dmarc_action(r, "enforce", sample=sample) == action
    assert dmarc_action(r, "monitor", sample=sample) == "accept"
