"""Account name, plan and password rules."""

from __future__ import annotations

import pytest

from mailrelay.accounts.service import (
    AccountError,
    validate_name,
    validate_password,
    validate_plan,
)


@pytest.mark.parametrize("name", ["alice", "a", "A.b_c-d@example.com", "x" * 64, "0"])
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "bad name", "tab\there", "new\nline", "ünï",
                                  "semi;colon", "slash/", "a:b", "trailing\n"])
def test_invalid_names_raise_with_the_allowed_characters(name: str) -> None:
    with pytest.raises(AccountError, match=r"use 1-64 characters from A-Z a-z 0-9"):
        validate_name(name)


@pytest.mark.parametrize("name", ["apikey", "APIKEY", "ApiKey"])
def test_apikey_is_reserved_because_it_selects_key_logins(name: str) -> None:
    with pytest.raises(AccountError, match="reserved"):
        validate_name(name)


def test_plans() -> None:
    for plan in ("free", "unlimited", "pro-2"):
        assert validate_plan(plan) == plan
    assert validate_plan("pro", ["free", "pro"]) == "pro"
    with pytest.raises(AccountError):
        validate_plan("bad plan")
    with pytest.raises(AccountError, match="expected one of free, unlimited"):
        validate_plan("enterprise", ["free", "unlimited"])


@pytest.mark.parametrize(("password", "message"), [
    ("short", "too short"),
    ("x" * 1025, "too long"),
    ("has\nnewline", "control characters"),
    ("nul\x00inside", "control characters"),
])
def test_bad_passwords(password: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        validate_password(password)


def test_good_password_is_returned_unchanged() -> None:
    assert validate_password("correct horse battery") == "correct horse battery"
