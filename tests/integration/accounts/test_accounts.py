"""AccountService on both databases: lifecycle, passwords, API keys, authentication."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountError, AccountService
from mailrelay.store.schema import accounts, api_keys

PASSWORD = "correct-horse-battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingHasher(PasswordHasher):
    """The fast hasher, counting verifications: shows the work done per login attempt."""

    def __init__(self) -> None:
        fast = make_hasher(fast=True)
        super().__init__(time_cost=fast.time_cost, memory_cost=fast.memory_cost,
                         parallelism=fast.parallelism, hash_len=fast.hash_len,
                         salt_len=fast.salt_len, type=fast.type)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(engine: sa.Engine, fast_hasher: PasswordHasher, clock: Clock) -> AccountService:
    return AccountService(engine, fast_hasher, clock=clock)


def test_create_get_list_count(svc: AccountService, clock: Clock) -> None:
    assert svc.count() == 0 and svc.list() == []
    bob = svc.create("bob", PASSWORD, plan="pro")
    clock.now += 10
    alice = svc.create("alice@example.com", PASSWORD)
    assert (bob.name, bob.plan, bob.status, bob.created_at) == ("bob", "pro", "active",
                                                                1_700_000_000.0)
    assert alice.plan == "free" and alice.id != bob.id
    assert svc.get("bob") == bob
    assert svc.get("nobody") is None
    assert [a.name for a in svc.list()] == ["alice@example.com", "bob"]
    assert svc.count() == 2


def test_create_refuses_duplicates_bad_names_plans_and_passwords(svc: AccountService) -> None:
    svc.create("alice", PASSWORD)
    with pytest.raises(AccountError, match="account 'alice' already exists"):
        svc.create("alice", PASSWORD)
    with pytest.raises(AccountError, match="invalid account name"):
        svc.create("al ice", PASSWORD)
    with pytest.raises(AccountError, match="invalid plan name"):
        svc.create("carol", PASSWORD, plan="gold plan")
    with pytest.raises(AccountError, match="too short"):
        svc.create("carol", "short")
    assert svc.count() == 1


def test_unknown_account_operations_raise(svc: AccountService) -> None:
    for call in (lambda: svc.set_status("ghost", "disabled"),
                 lambda: svc.set_password("ghost", PASSWORD),
                 lambda: svc.create_key("ghost"),
                 lambda: svc.list_keys("ghost")):
        with pytest.raises(AccountError, match="no account named 'ghost'"):
            call()


def test_password_authentication(svc: AccountService) -> None:
    alice = svc.create("alice", PASSWORD)
    assert svc.authenticate("alice", PASSWORD) == alice
    assert svc.authenticate("alice", PASSWORD + "x") is None
    assert svc.authenticate("Alice", PASSWORD) is None  # names are exact
    assert svc.authenticate("nobody", PASSWORD) is None
    assert svc.authenticate("alice", "x" * 5000) is None


def test_set_password_replaces_the_old_one(svc: AccountService) -> None:
    svc.create("alice", PASSWORD)
    svc.set_password("alice", "a-new-password")
    assert svc.authenticate("alice", PASSWORD) is None
    assert svc.authenticate("alice", "a-new-password") is not None


def test_disabled_account_cannot_authenticate_by_password_or_key(svc: AccountService) -> None:
    svc.create("alice", PASSWORD)
    _, key = svc.create_key("alice")
    assert svc.set_status("alice", "disabled").status == "disabled"
    assert svc.get("alice").status == "disabled"  # type: ignore[union-attr]
    assert svc.authenticate("alice", PASSWORD) is None
    assert svc.authenticate("apikey", key) is None
    svc.set_status("alice", "active")
    assert svc.authenticate("alice", PASSWORD) is not None
    assert svc.authenticate("apikey", key) is not None
    with pytest.raises(AccountError, match="unknown status"):
        svc.set_status("alice", "frozen")  # type: ignore[arg-type]


def test_api_key_lifecycle(svc: AccountService, clock: Clock) -> None:
    alice = svc.create("alice", PASSWORD)
    svc.create("bob", PASSWORD)
    key, full = svc.create_key("alice", label="ci")
    assert full.startswith(f"SG.{key.id}.") and len(full.split(".")[2]) == 43  # SendGrid's shape
    assert (key.account_name, key.label, key.revoked_at, key.last_used_at) == (
        "alice", "ci", None, None)
    _, bob_full = svc.create_key("bob")

    clock.now += 60
    assert svc.authenticate("apikey", full) == alice
    listed = svc.list_keys("alice")
    assert [k.id for k in listed] == [key.id]
    assert listed[0].last_used_at == clock.now
    assert len(svc.list_keys()) == 2

    # A right id with a wrong secret, a malformed key, an unknown id: all refused.
    assert svc.authenticate("apikey", full[:-1] + ("A" if full[-1] != "A" else "B")) is None
    assert svc.authenticate("apikey", "not-a-key") is None
    assert svc.authenticate("apikey", "MR.AAAAAAAAAAAAAAAA." + "b" * 43) is None
    assert svc.authenticate("alice", full) is None  # a key is not the account password

    clock.now += 60
    revoked = svc.revoke_key(full)  # a full key is accepted as well as its id
    assert revoked.revoked_at == clock.now
    assert svc.authenticate("apikey", full) is None
    assert svc.authenticate("apikey", bob_full) is not None  # other keys unaffected
    clock.now += 60
    assert svc.revoke_key(key.id).revoked_at == revoked.revoked_at  # idempotent
    assert not svc.list_keys("alice")[0].active


def test_revoke_unknown_or_malformed_key(svc: AccountService) -> None:
    with pytest.raises(AccountError, match="no API key with id 'AAAAAAAAAAAAAAAA'"):
        svc.revoke_key("AAAAAAAAAAAAAAAA")
    with pytest.raises(AccountError, match="not an API key id"):
        svc.revoke_key("bad id!")


def test_label_rules(svc: AccountService) -> None:
    svc.create("alice", PASSWORD)
    with pytest.raises(AccountError, match="invalid label"):
        svc.create_key("alice", label="x" * 129)
    with pytest.raises(AccountError, match="invalid label"):
        svc.create_key("alice", label="two\nlines")


def _all_text(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        rows: list[Any] = [*conn.execute(sa.select(accounts)), *conn.execute(sa.select(api_keys))]
    return "\n".join(repr(tuple(r)) for r in rows)


def test_only_argon2id_hashes_are_stored(svc: AccountService, engine: sa.Engine) -> None:
    svc.create("alice", PASSWORD)
    key, full = svc.create_key("alice")
    secret = full.split(".")[2]
    with engine.connect() as conn:
        password_hash = conn.execute(sa.select(accounts.c.password_hash)).scalar_one()
        key_row = conn.execute(sa.select(api_keys.c.id, api_keys.c.secret_hash)).one()
    assert password_hash.startswith("$argon2id$")
    assert key_row.secret_hash.startswith("$argon2id$")
    assert key_row.id == key.id  # the id is the public lookup part
    dump = _all_text(engine)
    assert PASSWORD not in dump and secret not in dump and full not in dump


def test_misses_cost_one_hash_verification_like_hits(engine: sa.Engine) -> None:
    hasher = CountingHasher()
    svc = AccountService(engine, hasher)
    svc.create("alice", PASSWORD)
    _, full = svc.create_key("alice")
    attempts = [("alice", PASSWORD), ("alice", "wrong-password"), ("nobody", PASSWORD),
                ("apikey", full), ("apikey", "MR.AAAAAAAAAAAAAAAA." + "b" * 43),
                ("apikey", "garbage")]
    for user, password in attempts:
        before = hasher.verifications
        svc.authenticate(user, password)
        assert hasher.verifications - before == 1, (user, password)


def test_password_hash_is_upgraded_when_parameters_rise(engine: sa.Engine) -> None:
    AccountService(engine, make_hasher(fast=True)).create("alice", PASSWORD)
    stronger = PasswordHasher(time_cost=2, memory_cost=128, parallelism=1)
    svc = AccountService(engine, stronger)
    assert svc.authenticate("alice", PASSWORD) is not None
    with engine.connect() as conn:
        stored = conn.execute(sa.select(accounts.c.password_hash)).scalar_one()
    assert "m=128,t=2,p=1" in stored
    assert svc.authenticate("alice", PASSWORD) is not None


def test_repeated_logins_skip_argon2_but_changes_apply_at_once(engine: sa.Engine) -> None:
    hasher = CountingHasher()
    svc = AccountService(engine, hasher)
    svc.create("alice", PASSWORD)
    info, full = svc.create_key("alice")
    for user, secret in (("alice", PASSWORD), ("apikey", full)):
        assert svc.authenticate(user, secret) is not None
        before = hasher.verifications
        for _ in range(5):
            assert svc.authenticate(user, secret) is not None
        assert hasher.verifications == before, "a recently verified credential is not re-hashed"
    assert svc.authenticate("alice", "wrong-password") is None, "a wrong password is never cached"
    svc.set_status("alice", "disabled")
    assert svc.authenticate("alice", PASSWORD) is None
    assert svc.authenticate("apikey", full) is None
    svc.set_status("alice", "active")
    svc.revoke_key(info.id)
    assert svc.authenticate("apikey", full) is None
    svc.set_password("alice", "a-brand-new-password")
    assert svc.authenticate("alice", PASSWORD) is None, "the old password dies with its hash"
    assert svc.authenticate("alice", "a-brand-new-password") is not None


def test_cache_can_be_switched_off(engine: sa.Engine) -> None:
    hasher = CountingHasher()
    svc = AccountService(engine, hasher, cache_seconds=0)
    svc.create("alice", PASSWORD)
    svc.authenticate("alice", PASSWORD)
    before = hasher.verifications
    svc.authenticate("alice", PASSWORD)
    assert hasher.verifications == before + 1
