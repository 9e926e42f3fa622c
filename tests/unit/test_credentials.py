"""Generated passwords, the argon2id hasher and the API key format."""

from __future__ import annotations

import re

import pytest
from argon2 import Type

from mailrelay.accounts import keys
from mailrelay.accounts.passwords import generate_password, make_hasher

URLSAFE = re.compile(r"[A-Za-z0-9_-]+\Z")


def test_generated_passwords_are_24_urlsafe_characters_and_unique() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) == 24 and URLSAFE.match(p) for p in passwords)


def test_production_hasher_is_argon2id_with_rfc9106_parameters() -> None:
    hasher = make_hasher()
    assert hasher.type is Type.ID
    assert hasher.time_cost >= 3
    assert hasher.memory_cost >= 64 * 1024  # KiB


def test_fast_hasher_still_makes_verifiable_argon2id_hashes() -> None:
    hasher = make_hasher(fast=True)
    stored = hasher.hash("s3cret-password")
    assert stored.startswith("$argon2id$")
    assert "s3cret-password" not in stored
    assert hasher.verify(stored, "s3cret-password")


def test_new_key_parts_have_the_documented_lengths() -> None:
    key_id, secret = keys.new_key()
    assert len(key_id) == 16 and URLSAFE.match(key_id)
    assert len(secret) >= 32 and URLSAFE.match(secret)
    assert keys.new_key() != (key_id, secret)


def test_new_key_ids_are_letters_and_digits_so_a_command_line_never_reads_one_as_an_option() -> None:
    # A url-safe id starts with "-" one time in 64; 2,000 of them would all miss it with
    # probability 2e-14.
    ids = {keys.new_key()[0] for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9]{16}", i) for i in ids)


def test_format_and_parse_round_trip() -> None:
    key_id, secret = keys.new_key()
    full = keys.format_key(key_id, secret)
    assert full == f"MR.{key_id}.{secret}"
    assert keys.parse_key(full) == (key_id, secret)
    assert keys.parse_key(f"  {full}\n") == (key_id, secret)


@pytest.mark.parametrize("text", [
    "", "MR", "MR..", "MR.abcdefgh", "XX.abcdefghijkl.abcdefghijklmnopqrstuvwxyz",
    "MR.short.abcdefghijklmnopqrstuvwxyz", "MR.abcdefghijkl.tooshort",
    "MR.abcdefghijkl.abcdefghijklmnop.extra", "MR.abc defghijkl.abcdefghijklmnopqrstuvwxyz",
    "SG.abcdefghijkl.abcdefghijklmnopqrstuvwxyz",
])
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert keys.parse_key(text) is None


def test_key_id_of_accepts_an_id_or_a_full_key() -> None:
    key_id, secret = keys.new_key()
    assert keys.key_id_of(key_id) == key_id
    assert keys.key_id_of(keys.format_key(key_id, secret)) == key_id
    assert keys.key_id_of("no such/thing") is None
    assert keys.key_id_of("") is None
