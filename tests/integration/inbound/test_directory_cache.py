"""The RCPT lookup cache of inbound domains and addresses (inbound.directory): answers,
negative ones included, last `ttl` seconds and no longer; the cache stays bounded."""

from __future__ import annotations

import sqlalchemy as sa

from mailrelay.accounts.addresses import AddressService
from mailrelay.accounts.domains import DomainService
from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.inbound.directory import MISS, Found, InboundDirectory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_cached_for_ttl_then_reread(engine: sa.Engine) -> None:
    AccountService(engine, make_hasher(fast=True)).create("alice", "pw-pw-pw-pw")
    domains = DomainService(engine)
    domains.add("in.test", "alice", inbound=True)
    clock = Clock()
    directory = InboundDirectory(engine, ttl=5.0, clock=clock)

    assert directory.cached("in.test", "ann") is MISS
    found = directory.lookup("in.test", "ann")
    assert found.domain is not None and found.domain.account_name == "alice" and not found.known
    assert directory.cached("in.test", "ann") == found  # the negative answer is cached too
    assert directory.lookup("other.test", "x") == Found(None, False)
    assert directory.cached("other.test", "x") == Found(None, False)

    AddressService(engine).add("ann@in.test")
    clock.now += 4.9
    assert directory.cached("in.test", "ann") == found  # still the old answer...
    clock.now += 0.2
    assert directory.cached("in.test", "ann") is MISS  # ...until the ttl is over
    assert directory.lookup("in.test", "ann").known

    domains.set_inbound("in.test", inbound=False)
    clock.now += 5.1
    assert directory.lookup("in.test", "ann") == Found(None, False)  # no longer ours


def test_cache_is_bounded(engine: sa.Engine) -> None:
    AccountService(engine, make_hasher(fast=True)).create("alice", "pw-pw-pw-pw")
    DomainService(engine).add("in.test", "alice", inbound=True)
    clock = Clock()
    directory = InboundDirectory(engine, ttl=5.0, max_entries=50, clock=clock)
    for i in range(500):
        directory.lookup("in.test", f"user{i}")
    assert len(directory._addresses._data) <= 50
    assert directory.cached("in.test", "user499") == directory.lookup("in.test", "user499")
    assert directory.cached("in.test", "user0") is MISS  # the oldest went first


def test_sub_addresses_match_the_address_before_the_delimiter(engine: sa.Engine) -> None:
    # Postfix recipient_delimiter: user+anything@domain is user@domain when user+anything is
    # not an address of its own; the delimiter splits at its first occurrence.
    AccountService(engine, make_hasher(fast=True)).create("alice", "pw-pw-pw-pw")
    domains = DomainService(engine)
    domains.add("in.test", "alice", inbound=True)
    AddressService(engine).add("ann@in.test")
    AddressService(engine).add("bob+sales@in.test")
    directory = InboundDirectory(engine)
    for local, known in (("ann", True), ("ann+news", True), ("ann+", True), ("ann+a+b", True),
                         ("bob+sales", True), ("bob", False), ("bob+other", False), ("carl+x", False),
                         ("+ann", False), ("annx", False)):
        assert directory.lookup("in.test", local).known is known, local
        assert directory.cached("in.test", local) == directory.lookup("in.test", local), local
    assert not InboundDirectory(engine, recipient_delimiter="").lookup("in.test", "ann+news").known
    dash = InboundDirectory(engine, recipient_delimiter="-+")  # any of several, as Postfix's
    assert dash.lookup("in.test", "ann-x").known and dash.lookup("in.test", "ann+x").known
