"""The DNS records of a sender domain, and checking them against a resolver (no database)."""

from __future__ import annotations

import asyncio

from mailrelay.accounts.dnsrecords import DNSRecord, check_records, dns_records
from mailrelay.accounts.domains import DKIMSelector, Domain
from mailrelay.resolver.base import DNSTemporaryError, MXAnswer


def _domain(*dkim: tuple[str, str, str]) -> Domain:
    keys = tuple(DKIMSelector(kind, sel, rec) for kind, sel, rec in dkim)  # type: ignore[arg-type]
    return Domain(1, "example.com", "alice", "mr1", tuple(k.kind for k in keys), 0.0, keys)


def test_dns_records() -> None:
    d = _domain(("rsa", "mr1", "v=DKIM1; k=rsa; p=AAAA"), ("ed25519", "mr1-ed", "v=DKIM1; k=ed25519; p=BBBB"))
    records = dns_records(d, hostname="Mail.Relay.test.", source_address="192.0.2.1")
    assert records == [
        DNSRecord("dkim", "TXT", "mr1._domainkey.example.com", "v=DKIM1; k=rsa; p=AAAA"),
        DNSRecord("dkim", "TXT", "mr1-ed._domainkey.example.com", "v=DKIM1; k=ed25519; p=BBBB"),
        DNSRecord("spf", "TXT", "example.com", "v=spf1 a:mail.relay.test ip4:192.0.2.1 ~all"),
        DNSRecord("dmarc", "TXT", "_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:postmaster@example.com"),
        DNSRecord("mx", "MX", "example.com", "10 mail.relay.test."),
    ]
    assert dns_records(d, hostname="h.test", source_address="2001:db8::1")[2].value == \
        "v=spf1 a:h.test ip6:2001:db8::1 ~all"
    assert dns_records(d, hostname="h.test")[2].value == "v=spf1 a:h.test ~all"


class MemoryResolver:
    """The Resolver protocol over dictionaries."""

    def __init__(self, txt: dict[str, list[str]], mx: dict[str, MXAnswer],
                 failing: frozenset[str] = frozenset()) -> None:
        self._txt, self._mx, self._failing = txt, mx, failing

    async def mx(self, domain: str) -> MXAnswer:
        return self._mx.get(domain, MXAnswer("nxdomain"))

    async def addresses(self, host: str) -> list[str]:
        return []

    async def txt(self, name: str) -> list[str]:
        if name in self._failing:
            raise DNSTemporaryError(f"{name}: timeout")
        return self._txt.get(name, [])


def test_check_records() -> None:
    d = _domain(("rsa", "mr1", "v=DKIM1; k=rsa; p=AAAA"), ("ed25519", "mr1-ed", "v=DKIM1; k=ed25519; p=BBBB"))
    records = dns_records(d, hostname="mail.relay.test")
    good = MemoryResolver(
        {"mr1._domainkey.example.com": ["v=DKIM1; k=rsa; p=AA AA"],  # folded in the zone
         "mr1-ed._domainkey.example.com": ["v=DKIM1; k=ed25519; p=BBBB"],
         "example.com": ["google-site-verification=x", "v=spf1 +a:mail.relay.test include:x.test -all"],
         "_dmarc.example.com": ["v=DMARC1; p=reject"]},
        {"example.com": MXAnswer("mx", ((5, "mx.other.test"), (10, "mail.relay.test")))})
    checks = asyncio.run(check_records(d, records, good))
    assert [c.status for c in checks] == ["ok"] * 5
    assert checks[4].found == ("mx.other.test", "mail.relay.test")

    bad = MemoryResolver(
        {"mr1._domainkey.example.com": ["v=DKIM1; k=rsa; p=OLD"],
         "example.com": ["v=spf1 include:elsewhere.test ~all"],
         "_dmarc.example.com": ["something else"]},
        {"example.com": MXAnswer("mx", ((10, "mx.other.test"),))},
        failing=frozenset({"mr1-ed._domainkey.example.com"}))
    checks = asyncio.run(check_records(d, records, bad))
    assert [(c.record.purpose, c.status) for c in checks] == [
        ("dkim", "different"), ("dkim", "error"), ("spf", "different"), ("dmarc", "missing"),
        ("mx", "different")]
    assert checks[0].found == ("v=DKIM1; k=rsa; p=OLD",) and "timeout" in checks[1].note
    assert checks[2].note == "does not authorize a:mail.relay.test"

    two_spf = MemoryResolver({"example.com": ["v=spf1 a:mail.relay.test ~all", "v=spf1 -all"]},
                             {"example.com": MXAnswer("null", ((0, ""),))})
    checks = asyncio.run(check_records(d, records, two_spf))
    assert (checks[2].status, checks[2].note) == ("different", "more than one SPF record")
    assert checks[4].status == "different" and "null MX" in checks[4].note
    empty = asyncio.run(check_records(d, records, MemoryResolver({}, {})))
    assert [c.status for c in empty] == ["missing"] * 5
