"""Envelope path parsing (RFC 5321 §4.1.2): what is accepted, what is refused, and with what."""

from __future__ import annotations

import pytest

from mailrelay.core.address import parse_path, validate_mailbox
from mailrelay.core.reply import Refusal


@pytest.mark.parametrize(
    ("arg", "address", "params"),
    [
        ("FROM:<a@example.com>", "a@example.com", {}),
        ("from: <a@example.com>", "a@example.com", {}),
        ("FROM:<> SIZE=10", "", {"SIZE": "10"}),
        ("FROM:<a@example.com> BODY=8BITMIME smtputf8", "a@example.com", {"BODY": "8BITMIME", "SMTPUTF8": None}),
        ("FROM:<@relay.example,@b.example:a@example.com>", "a@example.com", {}),
        ('FROM:<"odd > local"@example.com>', '"odd > local"@example.com', {}),
        ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]", {}),
        ("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", {}),
    ],
)
def test_accepted_paths(arg: str, address: str, params: dict[str, str | None]) -> None:
    path = parse_path(arg, "FROM", allow_null=True)
    assert path.address == address
    assert path.params == params


@pytest.mark.parametrize(
    ("arg", "code", "status"),
    [
        ("FROM:a@example.com", 501, "5.5.4"),  # no angle brackets
        ("TO:<a@example.com>", 501, "5.5.4"),  # wrong keyword
        ("FROM:<a@example.com", 501, "5.5.4"),  # unclosed
        ("FROM:<a\x00b@example.com>", 501, "5.1.7"),
        ("FROM:<a@exa\rmple.com>", 501, "5.1.7"),
        ("FROM:<a@-bad-.example>", 501, "5.1.7"),
        ("FROM:<a..b@example.com>", 501, "5.1.7"),
        ("FROM:<no-domain>", 501, "5.1.7"),
        ("FROM:<" + "a" * 65 + "@example.com>", 501, "5.1.7"),  # local part over 64
        ("FROM:<jösé@example.com>", 553, "5.6.7"),  # needs SMTPUTF8
        ("FROM:<a@example.com> SIZE=1=2", 501, "5.5.4"),
    ],
)
def test_refused_paths(arg: str, code: int, status: str) -> None:
    with pytest.raises(Refusal) as err:
        parse_path(arg, "FROM", allow_null=True)
    assert (err.value.reply.code, err.value.reply.status) == (code, status)


def test_null_path_only_where_allowed() -> None:
    with pytest.raises(Refusal):
        parse_path("TO:<>", "TO", allow_null=False)


def test_routing_domain_is_after_the_last_at() -> None:
    path = parse_path('TO:<"victim@evil.example"@mx.example>', "TO", allow_null=False)
    assert path.domain == "mx.example"
    assert parse_path("TO:<victim%evil.example@MX.Example>", "TO", allow_null=False).domain == "mx.example"


def test_utf8_mailbox_with_smtputf8() -> None:
    assert validate_mailbox("jösé@exämple.com", utf8=True)
    assert not validate_mailbox("jösé@exämple.com", utf8=False)
