"""SuppressionService on SQLite and PostgreSQL: by hand, in bulk, and inside a bounce transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailrelay.accounts.service import AccountError
from mailrelay.accounts.suppressions import (
    MAX_REASON,
    Suppression,
    SuppressionError,
    SuppressionService,
)
from mailrelay.core.status import EV_SUPPRESSION_ADDED as EVENT_ADDED
from mailrelay.core.status import EV_SUPPRESSION_REMOVED as EVENT_REMOVED
from mailrelay.store.schema import accounts, events, suppressions

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def make_account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(
            name=name, password_hash="$argon2id$x", created_at=T0, updated_at=T0)
            .returning(accounts.c.id)).scalar_one())


def event_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(events.c.type, events.c.account_id, events.c.recipient, events.c.detail)
            .order_by(events.c.id))]


@pytest.fixture
def svc(engine: sa.Engine) -> SuppressionService:
    return SuppressionService(engine, clock=Clock())


def test_add_list_remove_with_events(engine: sa.Engine, svc: SuppressionService) -> None:
    alice, bob = make_account(engine, "alice"), make_account(engine, "bob")
    s = svc.add("alice", "Carol@Example.NET", reason="asked to stop")
    assert s == Suppression("alice", "carol@example.net", "asked to stop", T0 + 1)
    # Idempotent: the first entry stays, no second event.
    assert svc.add("alice", "<CAROL@example.net>", reason="other") == s
    svc.add("bob", "carol@example.net")
    svc.add("alice", "abe@example.net")

    assert [(x.account, x.address) for x in svc.list()] == [
        ("alice", "abe@example.net"), ("alice", "carol@example.net"), ("bob", "carol@example.net")]
    assert [x.address for x in svc.list("bob")] == ["carol@example.net"]
    assert svc.get("alice", "CAROL@example.net") == s
    assert svc.get("alice", "nobody@example.net") is None

    removed = svc.remove("alice", "carol@EXAMPLE.net")
    assert removed == s
    assert [x.address for x in svc.list("alice")] == ["abe@example.net"]
    assert svc.is_suppressed(bob, "carol@example.net")  # bob's list is his own
    assert not svc.is_suppressed(alice, "carol@example.net")

    assert event_rows(engine) == [
        (EVENT_ADDED, alice, "carol@example.net", "asked to stop"),
        (EVENT_ADDED, bob, "carol@example.net", ""),
        (EVENT_ADDED, alice, "abe@example.net", ""),
        (EVENT_REMOVED, alice, "carol@example.net", "asked to stop"),
    ]


def test_mistakes(engine: sa.Engine, svc: SuppressionService) -> None:
    make_account(engine, "alice")
    with pytest.raises(AccountError, match="no account named 'ghost'"):
        svc.add("ghost", "x@example.net")
    with pytest.raises(AccountError, match="no account named 'ghost'"):
        svc.list("ghost")
    for bad in ("not-an-address", "a@b@", "x@example.net\r\nBcc: y@z", "", "@example.net"):
        with pytest.raises(SuppressionError, match="not an email address"):
            svc.add("alice", bad)
    with pytest.raises(SuppressionError, match="reason too long"):
        svc.add("alice", "x@example.net", reason="r" * (MAX_REASON + 1))
    with pytest.raises(SuppressionError) as info:
        svc.remove("alice", "X@example.net")
    assert str(info.value) == "x@example.net is not on the suppression list of account 'alice'"
    assert svc.list() == [] and event_rows(engine) == []
    # Control characters in a reason are flattened, not stored.
    assert svc.add("alice", "x@example.net", reason="line\none\x1b[0m").reason == "line one [0m"


def test_non_ascii_addresses_are_lowercased_too(engine: sa.Engine, svc: SuppressionService) -> None:
    account_id = make_account(engine, "alice")
    assert svc.add("alice", "Dörte@Bücher.Example").address == "dörte@bücher.example"
    assert svc.suppressed_among(account_id, ["DÖRTE@bücher.example"]) == {"DÖRTE@bücher.example"}


def test_suppressed_among_one_batch(engine: sa.Engine, svc: SuppressionService) -> None:
    alice, bob = make_account(engine, "alice"), make_account(engine, "bob")
    for address in ("a@example.net", "b@example.net"):
        svc.add("alice", address)
    svc.add("bob", "c@example.net")
    asked = ["A@example.net", "a@example.net", "b@example.net", "c@example.net", "d@example.net"]
    # Returned as given, so the caller can test membership with its own strings.
    assert svc.suppressed_among(alice, asked) == {"A@example.net", "a@example.net", "b@example.net"}
    assert svc.suppressed_among(bob, asked) == {"c@example.net"}
    assert svc.suppressed_among(alice, []) == set()
    many = [f"user{i}@example.net" for i in range(2000)] + ["b@example.net"]  # > one IN batch
    assert svc.suppressed_among(alice, many) == {"b@example.net"}


def test_add_from_bounce_is_idempotent_inside_one_transaction(engine: sa.Engine,
                                                              svc: SuppressionService) -> None:
    alice = make_account(engine, "alice")
    with engine.begin() as conn:
        assert SuppressionService.add_from_bounce(conn, alice, "Bob@Example.net",
                                                  "550 5.1.1 User unknown", T0)
        # Again, in the same transaction: no error, and (on PostgreSQL) the transaction is
        # still usable - a failed plain INSERT would have aborted it.
        assert not svc.add_from_bounce(conn, alice, "bob@example.net", "550 5.1.1 again", T0 + 5)
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one() == 1
        conn.execute(events.insert().values(account_id=alice, type="bounced", at=T0))
    assert svc.list("alice") == [Suppression("alice", "bob@example.net", "550 5.1.1 User unknown", T0)]
    # Manual adds are events; bounces are recorded by the delivery results writer instead.
    assert [r[0] for r in event_rows(engine)] == ["bounced"]


def test_add_from_bounce_rolls_back_with_its_transaction(engine: sa.Engine,
                                                         svc: SuppressionService) -> None:
    alice = make_account(engine, "alice")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        svc.add_from_bounce(conn, alice, "bob@example.net", "550 5.1.1", T0)
        raise RuntimeError("the delivery results write failed")
    assert not svc.is_suppressed(alice, "bob@example.net")


def test_add_from_bounce_flattens_and_bounds_the_reason(engine: sa.Engine,
                                                        svc: SuppressionService) -> None:
    alice = make_account(engine, "alice")
    with engine.begin() as conn:
        svc.add_from_bounce(conn, alice, "bob@example.net", "550\r\n" + "x" * 2000, T0)
    (entry,) = svc.list("alice")
    assert entry.reason.startswith("550 xxx") and len(entry.reason) == MAX_REASON


def test_deleting_an_account_deletes_its_list(engine: sa.Engine, svc: SuppressionService) -> None:
    alice = make_account(engine, "alice")
    svc.add("alice", "bob@example.net")
    with engine.begin() as conn:
        conn.execute(accounts.delete().where(accounts.c.id == alice))
    assert svc.list() == []
