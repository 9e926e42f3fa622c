"""SPFChecker against a real DNS server on loopback (tests/support/dnsserver.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest
import spf

from mailrelay.mailauth.spf import SPFChecker, SPFResult, check_spf
from mailrelay.resolver.base import Record
from mailrelay.resolver.dnspython import BlockingDNSResolver
from tests.support.dnsserver import FakeDNS

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro
    return asyncio.run(main())


@pytest.fixture
def checker(fake_dns: FakeDNS) -> Iterator[SPFChecker]:
    spf_checker = SPFChecker(BlockingDNSResolver([fake_dns.address], timeout=1.0), check_timeout=5.0)
    yield spf_checker
    spf_checker.close()


def check(checker: SPFChecker, ip: str, mail_from: str = "alice@example.com",
          helo: str = "mail.example.com") -> SPFResult:
    return run(check_spf(ip, mail_from, helo, checker=checker))


@pytest.mark.parametrize(("record", "ip", "expected"), [
    ("v=spf1 ip4:127.0.0.2 -all", "127.0.0.2", "pass"),
    ("v=spf1 ip4:127.0.0.2 -all", "127.0.0.3", "fail"),
    ("v=spf1 ip4:127.0.0.2 ~all", "127.0.0.3", "softfail"),
    ("v=spf1 ip4:127.0.0.2 ?all", "127.0.0.3", "neutral"),
    ("v=spf1 ip4:127.0.0.2", "127.0.0.3", "neutral"),  # RFC 7208 §4.7: no match, no all
])
def test_results_by_source_address(fake_dns: FakeDNS, checker: SPFChecker, record: str, ip: str,
                                   expected: str) -> None:
    fake_dns.txt("example.com", record)
    result = check(checker, ip)
    assert (result.result, result.domain, result.scope) == (expected, "example.com", "mailfrom")
    assert fake_dns.asked("example.com", "TXT")  # the configured server was asked


def test_pass_comment_names_the_mechanism(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 ip4:127.0.0.0/24 -all")
    assert check(checker, "127.0.0.9").comment == "127.0.0.9 matched 'ip4:127.0.0.0/24' of example.com"


def test_a_and_mx_mechanisms_resolve_through_dns(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 a:out.example.com mx -all")
    fake_dns.a("out.example.com", "127.0.0.4")
    fake_dns.mx("example.com", (10, "mx.example.com"))
    fake_dns.a("mx.example.com", "127.0.0.5")
    assert check(checker, "127.0.0.4").result == "pass"
    assert check(checker, "127.0.0.5").result == "pass"
    assert check(checker, "127.0.0.6").result == "fail"


def test_fail_carries_the_domains_explanation(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 -all exp=why.example.com")
    fake_dns.txt("why.example.com", "%{i} may not send for %{d}")
    result = check(checker, "127.0.0.3")
    assert (result.result, result.explanation) == ("fail", "127.0.0.3 may not send for example.com")


def test_no_explanation_without_exp(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 -all")
    assert check(checker, "127.0.0.3").explanation == ""


@pytest.mark.parametrize("setup", ["nxdomain", "no spf record"])
def test_none(fake_dns: FakeDNS, checker: SPFChecker, setup: str) -> None:
    if setup == "no spf record":
        fake_dns.txt("example.com", "google-site-verification=abc")
    result = check(checker, "127.0.0.2")
    assert (result.result, result.comment) == ("none", "no SPF record for example.com")


def test_null_sender_checks_the_helo_identity(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    # RFC 7208 §2.4: with MAIL FROM:<> the identity is postmaster@<HELO name>.
    fake_dns.txt("mail.example.com", "v=spf1 ip4:127.0.0.2 -all")
    for null in ("", "<>"):
        result = check(checker, "127.0.0.2", null, "Mail.Example.com")
        assert (result.result, result.domain, result.scope) == ("pass", "mail.example.com", "helo")
    assert check(checker, "127.0.0.3", "", "mail.example.com").result == "fail"
    assert not fake_dns.asked("example.com")


def test_null_sender_with_address_literal_helo_is_none(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    result = check(checker, "127.0.0.2", "", "[127.0.0.2]")
    assert (result.result, result.scope) == ("none", "helo")
    assert fake_dns.queries == []


def test_ipv6_and_ipv4_mapped_clients(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 ip6:2001:db8::/32 ip4:127.0.0.2 -all")
    assert check(checker, "2001:db8::1").result == "pass"
    assert check(checker, "2001:db9::1").result == "fail"
    assert check(checker, "::ffff:127.0.0.2").result == "pass"  # evaluated as IPv4 (RFC 7208 §5)
    assert check(checker, "fe80::1%eth0").result == "fail"  # the zone index is ignored


def test_invalid_client_address_is_temperror(checker: SPFChecker) -> None:
    result = check(checker, "not-an-ip")
    assert result.result == "temperror" and "not an IP address" in result.comment


def test_servfail_is_temperror(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.servfail("example.com", "TXT")
    result = check(checker, "127.0.0.2")
    assert result.result == "temperror" and "SERVFAIL" in result.comment


def test_servfail_in_a_mechanism_is_temperror(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    fake_dns.txt("example.com", "v=spf1 a:out.example.com -all")
    fake_dns.rcode("out.example.com", "REFUSED")
    assert check(checker, "127.0.0.2").result == "temperror"


def test_dns_that_never_answers_is_temperror_within_the_timeout(fake_dns: FakeDNS) -> None:
    fake_dns.timeout("example.com")
    spf_checker = SPFChecker(BlockingDNSResolver([fake_dns.address], timeout=0.5), check_timeout=5.0)
    try:
        started = time.monotonic()
        result = check(spf_checker, "127.0.0.2")
        elapsed = time.monotonic() - started
    finally:
        spf_checker.close()
    assert result.result == "temperror" and "no answer within 0.5 s" in result.comment
    assert 0.4 < elapsed < 0.5 + 1.0


def test_whole_check_is_bounded_by_check_timeout(fake_dns: FakeDNS) -> None:
    # A per-question timeout longer than the check's budget: the budget wins.
    fake_dns.txt("example.com", "v=spf1 include:slow.example.com -all")
    fake_dns.timeout("slow.example.com")
    spf_checker = SPFChecker(BlockingDNSResolver([fake_dns.address], timeout=5.0), check_timeout=0.5)
    try:
        started = time.monotonic()
        result = check(spf_checker, "127.0.0.2")
        elapsed = time.monotonic() - started
    finally:
        spf_checker.close()
    assert result.result == "temperror"
    assert elapsed < 0.5 + 1.0


@pytest.mark.parametrize(("records", "reason"), [
    (["v=spf1 ip4:127.0.0.300 -all"], "Invalid IP4"),
    (["v=spf1 moo -all"], "Unknown mechanism"),
    (["v=spf1 -all", "v=spf1 +all"], "Two or more"),
    (["v=spf1 " + " ".join(f"a:h{n}.example.com" for n in range(11)) + " -all"], "Too many DNS lookups"),
])
def test_permerror(fake_dns: FakeDNS, checker: SPFChecker, records: list[str], reason: str) -> None:
    for record in records:
        fake_dns.txt("example.com", record)
    for n in range(11):
        fake_dns.a(f"h{n}.example.com", "192.0.2.1")
    result = check(checker, "127.0.0.2")
    assert result.result == "permerror" and reason in result.comment


def test_void_lookup_limit_is_permerror(fake_dns: FakeDNS, checker: SPFChecker) -> None:
    # RFC 7208 §4.6.4: more than two lookups answering nothing.
    fake_dns.txt("example.com", "v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all")
    result = check(checker, "127.0.0.2")
    assert result.result == "permerror" and "Void lookup" in result.comment


def test_checkers_with_different_servers_run_concurrently() -> None:
    # The resolver is per checker (per worker thread), not a process-wide setting.
    with FakeDNS() as one, FakeDNS() as two:
        one.txt("example.com", "v=spf1 ip4:127.0.0.2 -all")
        two.txt("example.com", "v=spf1 -ip4:127.0.0.2 +all")
        first = SPFChecker(BlockingDNSResolver([one.address], timeout=1.0))
        second = SPFChecker(BlockingDNSResolver([two.address], timeout=1.0))
        try:
            async def both() -> list[SPFResult]:
                checks = [c.check("127.0.0.2", "a@example.com", "h.example.com")
                          for _ in range(10) for c in (first, second)]
                return await asyncio.gather(*checks)
            results = run(both())
        finally:
            first.close()
            second.close()
    assert [r.result for r in results] == ["pass", "fail"] * 10


class Recording:
    """A BlockingResolver that asks `inner` and notes each question."""

    def __init__(self, inner: BlockingDNSResolver) -> None:
        self.inner = inner
        self.asked: list[tuple[str, str]] = []

    @property
    def timeout(self) -> float:
        return self.inner.timeout

    def query(self, name: str, qtype: str, timeout: float) -> list[Record]:
        self.asked.append((name, qtype))
        return self.inner.query(name, qtype, timeout)


def test_every_question_goes_to_the_checkers_resolver(fake_dns: FakeDNS) -> None:
    # pyspf's module-wide lookup (system DNS) is neither used nor replaced: the checker's
    # resolver is asked every question of the evaluation.
    fake_dns.txt("example.com", "v=spf1 a:h.example.com mx -all")
    fake_dns.a("h.example.com", "192.0.2.1")
    fake_dns.mx("example.com", (10, "mx.example.com"))
    fake_dns.a("mx.example.com", "127.0.0.2")
    recording = Recording(BlockingDNSResolver([fake_dns.address], timeout=1.0))
    spf_checker = SPFChecker(recording, check_timeout=5.0)
    try:
        assert check(spf_checker, "127.0.0.2").result == "pass"
    finally:
        spf_checker.close()
    assert recording.asked == [("example.com", "TXT"), ("h.example.com", "A"), ("example.com", "MX"),
                               ("mx.example.com", "A")]
    assert spf.DNSLookup is spf.DNSLookup_dnspython


def test_closed_checker_answers_temperror(fake_dns: FakeDNS) -> None:
    spf_checker = SPFChecker(BlockingDNSResolver([fake_dns.address], timeout=1.0))
    spf_checker.close()
    assert check(spf_checker, "127.0.0.2").result == "temperror"
