"""DKIM key rotation on DomainService, on both databases: start (a next key, mail still signed
with the current one), finish (the next key signs, the old selectors are remembered), cancel."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailrelay.accounts.dnsrecords import dns_records, next_key_records
from mailrelay.accounts.domains import DomainService
from mailrelay.core.domains import DomainError
from mailrelay.mailauth.dkimsign import generate_private_key, public_key_record
from mailrelay.store.schema import accounts

NOW = 1_796_300_000.0  # 2026-12-03 UTC


@pytest.fixture
def svc(engine: sa.Engine) -> DomainService:
    with engine.begin() as conn:
        conn.execute(accounts.insert().values(name="alice", password_hash="$argon2id$x", created_at=1.0,
                                              updated_at=1.0))
    return DomainService(engine, clock=lambda: NOW)


def selectors(svc: DomainService, name: str) -> list[str]:
    return [k.selector for k in svc.signing_keys(name)]


def test_start_finish_swaps_keys_and_remembers_the_old_selectors(svc: DomainService) -> None:
    d = svc.add("example.com", "alice", algorithm="both")
    started = svc.start_rotation("example.com")
    assert started.next_selector == "mr202612" and started.rotation_started_at == NOW and started.rotating
    assert [(k.kind, k.selector) for k in started.next_dkim] == [("rsa", "mr202612"), ("ed25519", "mr202612-ed")]
    assert started.dkim == d.dkim and selectors(svc, "example.com") == ["mr1", "mr1-ed"]  # still the old keys
    records = dns_records(started, hostname="mx.relay.test")
    assert [(r.name, r.next_key) for r in records if r.purpose == "dkim"] == [
        ("mr1._domainkey.example.com", False), ("mr1-ed._domainkey.example.com", False),
        ("mr202612._domainkey.example.com", True), ("mr202612-ed._domainkey.example.com", True)]
    assert [r.value for r in next_key_records(started)] == [k.record for k in started.next_dkim]
    with pytest.raises(DomainError, match="already rotating to selector mr202612"):
        svc.start_rotation("example.com")
    with pytest.raises(DomainError, match="changed meanwhile"):
        svc.finish_rotation("example.com", "other")  # not the key whose records were checked

    done = svc.finish_rotation("example.com", "mr202612")
    assert (done.selector, done.dkim, done.next_selector, done.next_dkim) == (
        "mr202612", started.next_dkim, None, ())
    assert (done.previous_selectors, done.retired_at) == (("mr1", "mr1-ed"), NOW)
    keys = svc.signing_keys("example.com")
    assert [k.selector for k in keys] == ["mr202612", "mr202612-ed"]
    assert [public_key_record(k.private_key_pem) for k in keys] == [k.record for k in started.next_dkim]
    assert [r.name for r in dns_records(done, hostname="mx.relay.test") if r.purpose == "dkim"] == [
        "mr202612._domainkey.example.com", "mr202612-ed._domainkey.example.com"]

    # The next rotation this month gets a new name; a retired or current selector is refused.
    for taken in ("mr1", "MR202612", "mr1-ed"):
        with pytest.raises(DomainError, match="is in use"):
            svc.start_rotation("example.com", taken)
    assert svc.start_rotation("example.com").next_selector == "mr202612b"


def test_given_selector_keeps_the_algorithm_and_cancel_drops_the_next_key(svc: DomainService) -> None:
    svc.add("ed.example", "alice", private_key_pem=generate_private_key("ed25519"))
    with pytest.raises(DomainError, match="selector"):
        svc.start_rotation("ed.example", "bad selector!")
    with pytest.raises(DomainError, match="no domain named"):
        svc.start_rotation("nope.example")
    started = svc.start_rotation("ed.example", " Winter ")
    assert [(k.kind, k.selector) for k in started.next_dkim] == [("ed25519", "winter")]
    cancelled = svc.cancel_rotation("ed.example")
    assert (cancelled.next_selector, cancelled.next_dkim, cancelled.rotation_started_at) == (None, (), None)
    assert cancelled.dkim == started.dkim and selectors(svc, "ed.example") == ["mr1"]
    with pytest.raises(DomainError, match="not rotating"):
        svc.cancel_rotation("ed.example")
    with pytest.raises(DomainError, match="not rotating"):
        svc.finish_rotation("ed.example", "winter")
