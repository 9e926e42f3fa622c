"""From: domains: folded fields, and bounded work on huge or pathological values."""

from __future__ import annotations

import time

import pytest

from mailrelay.core.headers import MAX_FROM, from_domains, from_field


@pytest.mark.parametrize(("message", "domains"), [
    (b"From: Alice <alice@Sender.Test>\r\nTo: b@x.test\r\n\r\nbody", ["sender.test"]),
    (b"To: b@x.test\r\nfrom :a@one.test, b@two.test.\r\n\r\n", ["one.test", "two.test"]),
    # RFC 5322 §2.2.3: a folded field is read whole, not only its first line.
    (b"From: \"A very long display name\"\r\n <alice@sender.test>\r\nTo: b@x.test\r\n\r\n", ["sender.test"]),
    (b"From: first@one.test,\r\n\tsecond@two.test\r\n\r\n", ["one.test", "two.test"]),
    (b"Subject: no from\r\n\r\nFrom: body@not.header\r\n", []),
    (b"From: undisclosed\r\n\r\n", []),
])
def test_from_domains(message: bytes, domains: list[str]) -> None:
    assert from_domains(message) == domains


def test_from_field_is_unfolded() -> None:
    assert from_field(b"From: Name\r\n <a@b.test>\r\nX: y\r\n\r\n") == b" Name <a@b.test>"
    assert from_field(b"To: a@b.test\r\n\r\n") is None


@pytest.mark.parametrize("value", [
    b"@" * 3_000_000 + b"a@b.test",
    b"," * 3_000_000 + b"a@b.test",
    b"<" * 3_000_000 + b"a@b.test>",
    b"(" * 3_000_000 + b"a@b.test",
    b"a@b.test,\r\n " * 300_000,
])
def test_a_huge_from_field_is_not_parsed(value: bytes) -> None:
    # CPU time, not wall time: a machine busy with other work must not decide a test of complexity
    start = time.process_time()
    assert from_domains(b"From: " + value + b"\r\nTo: x@y.test\r\n\r\nbody") == []
    assert time.process_time() - start < 0.5


def test_the_limit_is_exact_and_deep_nesting_is_no_crash() -> None:
    def value(n: int) -> bytes:
        return b"x" * (n - len(b" <a@b.test>")) + b" <a@b.test>"
    assert from_domains(b"From:" + value(MAX_FROM) + b"\r\n\r\n") == ["b.test"]
    assert from_domains(b"From:" + value(MAX_FROM + 1) + b"\r\n\r\n") == []
    assert from_domains(b"From: " + b"(" * 2000 + b"a@b.test\r\n\r\n") == []
