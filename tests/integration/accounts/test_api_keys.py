"""API keys on both databases: SendGrid's format beside the old one, scopes, per-account
get / update / revoke / delete, and how often a login writes last_used_at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from mailrelay.accounts import scopes
from mailrelay.accounts.service import AccountError, AccountService, KeyNotFound
from mailrelay.store.schema import api_keys

from .test_accounts import PASSWORD, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(engine: sa.Engine, fast_hasher: PasswordHasher, clock: Clock) -> AccountService:
    return AccountService(engine, fast_hasher, clock=clock)


def _stored_scopes(engine: sa.Engine, key_id: str) -> str | None:
    with engine.connect() as conn:
        stored: str | None = conn.execute(
            sa.select(api_keys.c.scopes).where(api_keys.c.id == key_id)).scalar_one()
    return stored


def test_a_key_made_before_sendgrids_format_still_logs_in_with_full_access(
        svc: AccountService, engine: sa.Engine, fast_hasher: PasswordHasher) -> None:
    alice = svc.create("alice", PASSWORD)
    old_id, old_secret = "AbCdEfGh12345678", "s" * 43  # the MR. shape: a 16-character id
    with engine.begin() as conn:
        conn.execute(api_keys.insert().values(id=old_id, account_id=alice.id, label="old",
                                              secret_hash=fast_hasher.hash(old_secret),
                                              created_at=1.0))
    old_key = f"MR.{old_id}.{old_secret}"
    assert svc.authenticate_key(old_key) == (alice, None)
    assert svc.authenticate("apikey", old_key) == alice  # SMTP as well
    assert svc.authenticate_key(f"SG.{old_id}.{old_secret}") is None  # not SendGrid's lengths
    [listed] = svc.list_keys("alice")
    assert (listed.id, listed.scopes) == (old_id, None)
    assert svc.revoke_key(old_key).revoked_at is not None  # the full old key names it too
    assert svc.authenticate_key(old_key) is None


def test_scoped_key_is_stored_as_a_sorted_json_list_and_returned_at_login(
        svc: AccountService, engine: sa.Engine) -> None:
    alice = svc.create("alice", PASSWORD)
    key, full = svc.create_key("alice", label="stats", scopes=["stats.read", "mail.send",
                                                                  "stats.read"])
    assert full.startswith(f"SG.{key.id}.") and len(full) == 69
    assert key.scopes == ("mail.send", "stats.read")
    assert _stored_scopes(engine, key.id) == '["mail.send", "stats.read"]'
    assert svc.list_keys("alice")[0].scopes == ("mail.send", "stats.read")
    assert svc.authenticate_key(full) == (alice, frozenset({"mail.send", "stats.read"}))

    full_key, full_access = svc.create_key("alice")
    assert full_key.scopes is None and _stored_scopes(engine, full_key.id) is None
    assert svc.authenticate_key(full_access) == (alice, None)
    every, _ = svc.create_key("alice", scopes=sorted(scopes.FULL_ACCESS))
    assert every.scopes is None and _stored_scopes(engine, every.id) is None


def test_unknown_scope_is_refused_by_name_and_nothing_is_stored(svc: AccountService) -> None:
    svc.create("alice", PASSWORD)
    with pytest.raises(AccountError, match=r"unknown scope 'mail\.sendd'"):
        svc.create_key("alice", scopes=["mail.send", "mail.sendd"])
    assert svc.list_keys("alice") == []


def test_a_key_without_mail_send_cannot_log_in_over_smtp(svc: AccountService) -> None:
    alice = svc.create("alice", PASSWORD)
    _, reader = svc.create_key("alice", scopes=["stats.read", "suppression.read"])
    _, sender = svc.create_key("alice", scopes=["mail.send"])
    assert svc.authenticate_key(reader) == (alice, frozenset({"stats.read", "suppression.read"}))
    assert svc.authenticate("apikey", reader) is None
    assert svc.authenticate("apikey", sender) == alice


def test_get_update_revoke_delete_see_only_the_accounts_own_keys(svc: AccountService) -> None:
    alice = svc.create("alice", PASSWORD)
    bob = svc.create("bob", PASSWORD)
    key, full = svc.create_key("alice", label="ci", scopes=["mail.send"])
    bobs, bob_full = svc.create_key("bob", label="bob's secret label")

    assert svc.get_key(alice.id, key.id) == key
    assert svc.get_key(alice.id, full) == key  # a full key names its id
    for call in (lambda: svc.get_key(alice.id, bobs.id),
                 lambda: svc.update_key(alice.id, bobs.id, label="mine now"),
                 lambda: svc.update_key(alice.id, bobs.id, scopes=["stats.read"]),
                 lambda: svc.revoke_key(bobs.id, alice.id),
                 lambda: svc.delete_key(alice.id, bobs.id),
                 lambda: svc.get_key(alice.id, "AAAAAAAAAAAAAAAAAAAAAA"),
                 lambda: svc.get_key(alice.id, "bad id!")):
        with pytest.raises(KeyNotFound) as info:
            call()
        assert "secret label" not in str(info.value) and "'bob'" not in str(info.value)
    # Bob's key is untouched by all of that.
    assert svc.get_key(bob.id, bobs.id) == bobs
    assert svc.authenticate_key(bob_full) == (bob, None)
    with pytest.raises(KeyNotFound, match=f"no API key with id '{bobs.id}'"):
        svc.get_key(alice.id, bobs.id)  # the same answer as for an id nobody has


def test_update_key_changes_label_and_scopes_at_once_for_the_next_login(
        svc: AccountService, engine: sa.Engine) -> None:
    alice = svc.create("alice", PASSWORD)
    key, full = svc.create_key("alice", label="ci", scopes=["mail.send"])

    renamed = svc.update_key(alice.id, key.id, label="deploy")
    assert (renamed.label, renamed.scopes) == ("deploy", ("mail.send",))

    narrowed = svc.update_key(alice.id, key.id, scopes=["stats.read"])
    assert (narrowed.label, narrowed.scopes) == ("deploy", ("stats.read",))
    assert svc.get_key(alice.id, key.id) == narrowed
    assert svc.authenticate_key(full) == (alice, frozenset({"stats.read"}))
    assert svc.authenticate("apikey", full) is None  # no longer allowed to send

    widened = svc.update_key(alice.id, key.id, scopes=scopes.FULL_ACCESS)
    assert widened.scopes is None and _stored_scopes(engine, key.id) is None
    assert svc.authenticate("apikey", full) == alice

    assert svc.update_key(alice.id, key.id) == svc.get_key(alice.id, key.id)  # nothing asked
    with pytest.raises(AccountError, match="unknown scope 'nope'"):
        svc.update_key(alice.id, key.id, scopes=["nope"])
    with pytest.raises(AccountError, match="invalid label"):
        svc.update_key(alice.id, key.id, label="two\nlines")
    assert svc.get_key(alice.id, key.id).label == "deploy"


def test_delete_removes_the_key_while_revoke_keeps_it_listed(svc: AccountService) -> None:
    alice = svc.create("alice", PASSWORD)
    kept, kept_full = svc.create_key("alice", label="kept")
    gone, gone_full = svc.create_key("alice", label="gone")
    revoked = svc.revoke_key(kept.id, alice.id)
    assert revoked.revoked_at is not None
    assert svc.delete_key(alice.id, gone.id) == gone
    assert [(k.id, k.active) for k in svc.list_keys("alice")] == [(kept.id, False)]
    assert svc.authenticate_key(gone_full) is None and svc.authenticate_key(kept_full) is None
    with pytest.raises(KeyNotFound):
        svc.delete_key(alice.id, gone.id)
    assert svc.delete_key(alice.id, kept.id).id == kept.id  # a revoked key can be deleted too
    assert svc.list_keys("alice") == []


@pytest.fixture
def key_writes(engine: sa.Engine) -> Iterator[list[str]]:
    """The UPDATE statements sent to api_keys, as the database receives them."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


def test_last_used_at_is_written_at_most_once_a_minute_per_key(
        svc: AccountService, clock: Clock, key_writes: list[str]) -> None:
    alice = svc.create("alice", PASSWORD)
    key, full = svc.create_key("alice")
    other, other_full = svc.create_key("alice")
    first = clock.now

    assert svc.authenticate_key(full) is not None
    clock.now += 0.5
    assert svc.authenticate_key(full) is not None  # two logins within a second: one write
    assert len(key_writes) == 1
    assert svc.get_key(alice.id, key.id).last_used_at == first

    assert svc.authenticate("apikey", other_full) is not None  # each key has its own minute
    assert len(key_writes) == 2

    clock.now = first + 59.9
    assert svc.authenticate_key(full) is not None
    assert len(key_writes) == 2
    clock.now = first + 60
    assert svc.authenticate_key(full) is not None
    assert len(key_writes) == 3
    assert svc.get_key(alice.id, key.id).last_used_at == first + 60
    assert svc.get_key(alice.id, other.id).last_used_at == first + 0.5


def test_refused_keys_write_nothing(svc: AccountService, key_writes: list[str]) -> None:
    svc.create("alice", PASSWORD)
    info, full = svc.create_key("alice")
    svc.revoke_key(info.id)
    key_writes.clear()
    assert svc.authenticate_key(full) is None
    assert svc.authenticate_key(full[:-1] + ("A" if full[-1] != "A" else "B")) is None
    assert svc.authenticate_key("SG." + "x" * 2000) is None
    assert key_writes == []


def test_key_if_known_answers_only_what_needs_no_argon2_and_no_write(
        svc: AccountService, clock: Clock, key_writes: list[str]) -> None:
    svc.create("alice", PASSWORD)
    info, full = svc.create_key("alice", scopes=["mail.send"])
    assert svc.key_if_known(full) is None  # never checked: argon2 is authenticate_key's work
    assert svc.authenticate_key(full) is not None
    known = svc.key_if_known(full)
    assert known is not None and known[0].name == "alice" and known[1] == frozenset({"mail.send"})
    assert len(key_writes) == 1  # only authenticate_key's last_used_at
    assert svc.key_if_known(full[:-1] + ("A" if full[-1] != "A" else "B")) is None  # wrong secret
    assert svc.key_if_known("SG.nosuchkey.secret") is None and svc.key_if_known("junk") is None
    clock.now += 60  # last_used_at is due: that write is authenticate_key's
    assert svc.key_if_known(full) is None
    assert svc.authenticate_key(full) is not None and svc.key_if_known(full) is not None
    svc.set_status("alice", "disabled")  # read afresh every time: takes effect at once
    assert svc.key_if_known(full) is None and svc.authenticate_key(full) is None
    svc.set_status("alice", "active")
    assert svc.key_if_known(full) is not None
    svc.revoke_key(info.id)
    assert svc.key_if_known(full) is None and svc.authenticate_key(full) is None
