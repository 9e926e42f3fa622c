"""DomainService on both databases: add (generated or imported keys), ownership, keys, receiving."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailrelay.accounts.domains import DomainService
from mailrelay.core.domains import DomainError, owner_domain
from mailrelay.mailauth.dkimsign import DKIMSigner, generate_private_key, public_key_record
from mailrelay.store.schema import accounts


def _account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(
            name=name, password_hash="$argon2id$x", created_at=1.0, updated_at=1.0)
            .returning(accounts.c.id)).scalar_one())


@pytest.fixture
def svc(engine: sa.Engine) -> DomainService:
    return DomainService(engine, clock=lambda: 1_700_000_000.0)


def test_add_generates_keys_and_round_trips(engine: sa.Engine, svc: DomainService) -> None:
    alice = _account(engine, "alice")
    d = svc.add("Example.COM.", "alice")
    assert (d.name, d.account_name, d.selector, d.algorithms, d.created_at) == (
        "example.com", "alice", "mr1", ("rsa",), 1_700_000_000.0)
    assert [(k.kind, k.selector) for k in d.dkim] == [("rsa", "mr1")]
    assert d.dkim[0].record.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # 2048 bits
    assert svc.get("EXAMPLE.com") == d and svc.get("nope.example") is None

    both = svc.add("news.example.com", "alice", selector="S2", algorithm="both")
    assert [(k.kind, k.selector) for k in both.dkim] == [("rsa", "s2"), ("ed25519", "s2-ed")]
    ed = svc.add("ed.example.org", "alice", algorithm="ed25519")
    assert [(k.kind, k.selector) for k in ed.dkim] == [("ed25519", "mr1")]

    keys = svc.signing_keys("news.example.com")
    assert [(k.domain, k.selector, k.algorithm) for k in keys] == [
        ("news.example.com", "s2", "rsa-sha256"), ("news.example.com", "s2-ed", "ed25519-sha256")]
    assert [public_key_record(k.private_key_pem) for k in keys] == [k.record for k in both.dkim]
    assert DKIMSigner(keys).sign(b"From: a@news.example.com\r\n\r\nhi\r\n").count(b"DKIM-Signature") == 2

    assert [x.name for x in svc.list()] == ["ed.example.org", "example.com", "news.example.com"]
    assert svc.domains_of(alice) == {"example.com", "news.example.com", "ed.example.org"}
    assert svc.remove("news.example.com").name == "news.example.com"
    assert svc.get("news.example.com") is None
    with pytest.raises(DomainError, match="no domain named"):
        svc.remove("news.example.com")
    with pytest.raises(DomainError, match="no domain named"):
        svc.signing_keys("news.example.com")


def test_import_key_decides_algorithm(engine: sa.Engine, svc: DomainService) -> None:
    _account(engine, "alice")
    ed_pem = generate_private_key("ed25519")
    d = svc.add("example.com", "alice", algorithm="rsa", private_key_pem=ed_pem)
    assert d.algorithms == ("ed25519",) and d.dkim[0].record == public_key_record(ed_pem)
    assert svc.signing_keys("example.com")[0].private_key_pem == ed_pem

    rsa_pem = generate_private_key("rsa", 1024)
    d = svc.add("example.net", "alice", private_key_pem=rsa_pem)
    assert d.algorithms == ("rsa",) and d.dkim[0].record == public_key_record(rsa_pem)
    with pytest.raises(DomainError, match="not a PEM private key"):
        svc.add("example.org", "alice", private_key_pem=b"junk")
    assert svc.get("example.org") is None


def test_mistakes(engine: sa.Engine, svc: DomainService) -> None:
    _account(engine, "alice")
    _account(engine, "bob")
    svc.add("example.com", "alice")
    with pytest.raises(DomainError, match="no account named 'carol'"):
        svc.add("example.org", "carol")
    with pytest.raises(DomainError, match="already added to account alice"):
        svc.add("EXAMPLE.com", "alice")
    with pytest.raises(DomainError, match="already taken by another account"):
        svc.add("example.com", "bob")
    with pytest.raises(DomainError, match=r"overlaps example\.com"):
        svc.add("news.example.com", "bob")
    svc.add("deep.sub.example.net", "alice")
    with pytest.raises(DomainError, match=r"overlaps deep\.sub\.example\.net"):
        svc.add("example.net", "bob")
    svc.add("news.example.com", "alice")  # an account may add its own subdomains
    with pytest.raises(DomainError, match="invalid selector"):
        svc.add("example.org", "alice", selector="bad selector")
    with pytest.raises(DomainError, match="unknown algorithm"):
        svc.add("example.org", "alice", algorithm="dsa")  # type: ignore[arg-type]
    with pytest.raises(DomainError, match="no account named"):
        svc.list("carol")
    assert svc.list("bob") == []


def test_ownership(engine: sa.Engine, svc: DomainService) -> None:
    alice, bob = _account(engine, "alice"), _account(engine, "bob")
    svc.add("example.com", "alice")
    svc.add("news.example.com", "alice")
    assert svc.owns(alice, "example.com") and svc.owns(alice, "NEWS.example.com.")
    assert svc.owns(alice, "a.b.example.com")
    assert not svc.owns(alice, "example.net") and not svc.owns(alice, "notexample.com")
    assert not svc.owns(bob, "example.com") and svc.domains_of(bob) == set()
    owned = svc.domains_of(alice)
    assert owner_domain(owned, "x.news.example.com") == "news.example.com"
    assert owner_domain(owned, "x.example.com") == "example.com"
    assert owner_domain(owned, "com") is None
