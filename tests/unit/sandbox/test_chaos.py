"""Sandbox chaos: parsing what the operator typed and what is stored, and drawing failures."""

from __future__ import annotations

import logging

import pytest

from mailrelay.accounts.service import Account
from mailrelay.sandbox import chaos


def account(stored: str | None, *, sandbox: bool = True) -> Account:
    return Account(id=1, name="sandy", plan="unlimited", status="active", created_at=0.0, sandbox=sandbox,
                   chaos=stored)


@pytest.mark.parametrize(("text", "fraction", "code"), [
    ("0.2:451", 0.2, 451), ("1", 1.0, chaos.DEFAULT_CODE), ("0", 0.0, chaos.DEFAULT_CODE),
    (" 0.5:554 ", 0.5, 554), ("1:599", 1.0, 599), ("0.01:400", 0.01, 400),
])
def test_spec_parses(text: str, fraction: float, code: int) -> None:
    assert chaos.parse_spec(text) == chaos.Failure(fraction, code)


@pytest.mark.parametrize(("text", "says"), [
    ("1.5", "between 0 and 1"), ("-0.1:451", "between 0 and 1"), ("nan", "between 0 and 1"),
    ("0.5:421", "421 is not allowed"), ("0.5:250", "not a 4xx or 5xx"), ("0.5:600", "not a 4xx or 5xx"),
    ("half", "FRACTION[:CODE]"), ("0.5:x", "not a number"), ("", "FRACTION[:CODE]"),
])
def test_bad_spec_is_refused(text: str, says: str) -> None:
    with pytest.raises(chaos.ChaosError) as exc:
        chaos.parse_spec(text)
    assert says in str(exc.value)


def test_round_trip_and_description() -> None:
    stored = chaos.to_json({"rcpt": chaos.Failure(0.2, 451), "data": chaos.Failure(1.0, 554)})
    assert stored is not None
    assert chaos.parse(stored) == {"rcpt": chaos.Failure(0.2, 451), "data": chaos.Failure(1.0, 554)}
    assert chaos.describe(stored) == "RCPT 20% 451, DATA 100% 554"
    assert chaos.to_json({}) is None and chaos.describe(None) == "none"


def test_reply_drawn_against_the_fraction() -> None:
    a = account(chaos.to_json({"rcpt": chaos.Failure(0.25, 450)}))
    assert chaos.chaos_reply(a, "rcpt", rand=lambda: 0.24) is not None
    assert chaos.chaos_reply(a, "rcpt", rand=lambda: 0.25) is None
    assert chaos.chaos_reply(a, "data", rand=lambda: 0.0) is None, "no DATA chaos configured"
    reply = chaos.chaos_reply(a, "rcpt", rand=lambda: 0.0)
    assert reply is not None and (reply.code, reply.status) == (450, "4.0.0")
    assert "sandbox chaos" in reply.text and "sandy" in reply.text


def test_fraction_one_always_and_zero_never() -> None:
    always = account(chaos.to_json({"data": chaos.Failure(1.0, 554)}))
    never = account(chaos.to_json({"data": chaos.Failure(0.0, 554)}))
    for _ in range(200):
        hit = chaos.chaos_reply(always, "data")
        assert hit is not None and (hit.code, hit.status) == (554, "5.0.0")
        assert chaos.chaos_reply(never, "data") is None


def test_only_for_sandbox_accounts() -> None:
    stored = chaos.to_json({"rcpt": chaos.Failure(1.0, 451)})
    assert chaos.chaos_reply(account(stored, sandbox=False), "rcpt") is None


@pytest.mark.parametrize("stored", [
    "not json", "[1]", '{"rcpt": 1}', '{"rcpt": {"fraction": 2, "code": 451}}',
    '{"rcpt": {"fraction": 1, "code": 421}}', '{"other": {}}', '{"rcpt": {"code": 451}}',
    '{"rcpt": {"fraction": 1, "code": true}}',
])
def test_invalid_stored_value_means_no_chaos_with_one_warning(stored: str, caplog: pytest.LogCaptureFixture,
                                                               ) -> None:
    chaos.parse.cache_clear()
    with caplog.at_level(logging.WARNING, logger="mailrelay.sandbox"):
        for _ in range(3):
            assert chaos.chaos_reply(account(stored), "rcpt", rand=lambda: 0.0) is None
    assert len([r for r in caplog.records if "invalid sandbox chaos" in r.getMessage()]) == 1
