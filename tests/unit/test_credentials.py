"""Generated passwords, the argon2id hasher, the API key format and key scopes."""

from __future__ import annotations

import re

import pytest
from argon2 import Type

from mailrelay.accounts import keys, scopes
from mailrelay.accounts.passwords import generate_password, make_hasher
from mailrelay.accounts.service import AccountError, validate_scopes

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
    # SendGrid's lengths (keys made before had a 16-character id: see the MR. tests below).
    key_id, secret = keys.new_key()
    assert len(key_id) == 22 and URLSAFE.match(key_id)
    assert len(secret) == 43 and URLSAFE.match(secret)
    assert keys.new_key() != (key_id, secret)


def test_a_new_full_key_is_sendgrids_69_characters() -> None:
    full = keys.format_key(*keys.new_key())
    assert len(full) == 69
    assert re.fullmatch(r"SG\.[A-Za-z0-9]{22}\.[A-Za-z0-9_-]{43}", full)


def test_new_key_ids_are_letters_and_digits_so_a_command_line_never_reads_one_as_an_option() -> None:
    # A url-safe id starts with "-" one time in 64; 2,000 of them would all miss it with
    # probability 2e-14.
    ids = {keys.new_key()[0] for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9]{22}", i) for i in ids)


def test_format_and_parse_round_trip() -> None:
    key_id, secret = keys.new_key()
    full = keys.format_key(key_id, secret)
    assert full == f"SG.{key_id}.{secret}"
    assert keys.parse_key(full) == (key_id, secret)
    assert keys.parse_key(f"  {full}\n") == (key_id, secret)


@pytest.mark.parametrize("full, parts", [
    ("MR.AbCdEfGh12345678.abcdefghijklmnopqrstuvwxyz0123456789-_ABCDE",
     ("AbCdEfGh12345678", "abcdefghijklmnopqrstuvwxyz0123456789-_ABCDE")),
    ("MR.-url_safe_id-.abcdefghijklmnop", ("-url_safe_id-", "abcdefghijklmnop")),  # oldest ids
])
def test_keys_made_before_keep_parsing(full: str, parts: tuple[str, str]) -> None:
    assert keys.parse_key(full) == parts
    assert keys.key_id_of(full) == parts[0]


def test_sendgrid_shaped_keys_parse_only_at_sendgrids_exact_lengths() -> None:
    key_id, secret = "A" * 22, "b" * 43
    assert keys.parse_key(f"SG.{key_id}.{secret}") == (key_id, secret)
    assert keys.parse_key(f"SG.a-b_{key_id[4:]}.{secret}") == (f"a-b_{key_id[4:]}", secret)
    for bad in (f"SG.{key_id}xy.{secret}", f"SG.{key_id[:-1]}.{secret}", f"SG.{key_id}.{secret[:-1]}",
                f"SG.{key_id}.{secret}x", f"sg.{key_id}.{secret}", f"SG.{key_id}.{secret}.x"):
        assert keys.parse_key(bad) is None, bad


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


def test_full_access_holds_the_sendgrid_scopes_mailrelay_honours() -> None:
    expected = {"mail.send", "mail.batch.create", "mail.batch.read", "mail.batch.update",
                "mail.batch.delete", "user.scheduled_sends.create", "user.scheduled_sends.read",
                "user.scheduled_sends.update", "user.scheduled_sends.delete", "api_keys.create",
                "api_keys.read", "api_keys.update", "api_keys.delete", "suppression.create",
                "suppression.read", "suppression.update", "suppression.delete",
                "suppression.bounces.read", "suppression.blocks.delete",
                "suppression.invalid_emails.read", "suppression.spam_reports.delete",
                "suppression.unsubscribes.create", "asm.groups.read", "asm.groups.create",
                "asm.suppressions.global.read", "templates.create", "templates.read",
                "templates.versions.create", "templates.versions.activate.create",
                "whitelabel.create", "whitelabel.read", "whitelabel.update", "whitelabel.delete",
                "user.webhooks.event.settings.read", "user.webhooks.event.settings.update",
                "user.webhooks.event.test.create", "user.webhooks.event.test.read",
                "user.webhooks.event.test.update", "user.webhooks.parse.settings.read",
                "stats.read", "categories.stats.read", "messages.read"}
    assert expected <= scopes.FULL_ACCESS
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", s) for s in scopes.FULL_ACCESS)
    # Not SendGrid names: SendGrid answers GET /v3/scopes for any key, billing is apart.
    assert not {"scopes.read", "billing.read", "mail.read"} & scopes.FULL_ACCESS


def test_allows_full_access_an_exact_scope_and_sendgrids_suppression_nesting() -> None:
    assert scopes.allows(None, "mail.send")
    assert scopes.allows({"mail.send"}, "mail.send")
    assert not scopes.allows({"stats.read"}, "mail.send")
    assert not scopes.allows(set(), "stats.read")
    assert scopes.allows({"suppression.read"}, "suppression.bounces.read")
    assert scopes.allows({"suppression.delete"}, "suppression.spam_reports.delete")
    assert not scopes.allows({"suppression.read"}, "suppression.bounces.delete")
    assert not scopes.allows({"suppression.bounces.read"}, "suppression.read")
    assert not scopes.allows({"suppression.bounces.read"}, "suppression.blocks.read")
    assert not scopes.allows({"templates.read"}, "templates.versions.read")
    assert not scopes.allows({"mail.batch.read"}, "mail.batch.update")


def test_validate_scopes_sorts_dedupes_and_names_an_unknown_scope() -> None:
    assert validate_scopes(None) is None
    assert validate_scopes(["stats.read", "mail.send", "stats.read"]) == ("mail.send", "stats.read")
    assert validate_scopes([]) == ()
    assert validate_scopes(sorted(scopes.FULL_ACCESS)) is None  # every scope is full access
    with pytest.raises(AccountError, match=r"unknown scope 'mail\.sned'"):
        validate_scopes(["mail.send", "mail.sned", "billing.read"])
    with pytest.raises(AccountError, match=r"unknown scope 'billing\.read'"):
        validate_scopes(["billing.read"])
    with pytest.raises(AccountError, match="not one string"):
        validate_scopes("mail.send")
    with pytest.raises(AccountError, match="strings"):
        validate_scopes([1])  # type: ignore[list-item]


def test_scopes_are_stored_as_a_json_list_or_null() -> None:
    assert scopes.dump(None) is None and scopes.load(None) is None
    assert scopes.dump(("mail.send", "stats.read")) == '["mail.send", "stats.read"]'
    assert scopes.load(scopes.dump(("mail.send",))) == ("mail.send",)
