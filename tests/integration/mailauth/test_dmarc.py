"""check_dmarc / check_message with records on a real DNS server on loopback."""

from __future__ import annotations

import asyncio

from mailrelay.mailauth.dkimsign import DKIMKey, DKIMSigner, generate_private_key, public_key_record
from mailrelay.mailauth.dkimverify import DKIMResult, verify_dkim
from mailrelay.mailauth.dmarc import DMARCResult, check_dmarc, check_message, dmarc_action
from mailrelay.resolver.dnspython import DNSResolver
from tests.support.dnsserver import FakeDNS

PASS_EXAMPLE = DKIMResult("pass", "example.com", "s1", "rsa-sha256", "abcdefgh")


def dmarc(fake_dns: FakeDNS, from_domain: str, spf: tuple[str, str] | None,
          dkim: list[DKIMResult] | None = None) -> DMARCResult:
    resolver = DNSResolver([fake_dns.address], timeout=1.0)
    return asyncio.run(check_dmarc(from_domain, spf, dkim or [], resolver=resolver))


def test_pass_through_aligned_spf(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = dmarc(fake_dns, "example.com", ("pass", "bounces.example.com"))
    assert (result.result, result.policy, result.domain) == ("pass", "reject", "example.com")
    assert result.spf_aligned and not result.dkim_aligned


def test_pass_through_aligned_dkim(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    result = dmarc(fake_dns, "example.com", ("pass", "other.test"), [PASS_EXAMPLE])
    assert result.result == "pass" and result.dkim_aligned and not result.spf_aligned


def test_strict_alignment_needs_the_exact_domain(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject; aspf=s; adkim=s")
    sub_sig = DKIMResult("pass", "mail.example.com", "s1", "rsa-sha256", "abcdefgh")
    assert dmarc(fake_dns, "example.com", ("pass", "bounces.example.com"), [sub_sig]).result == "fail"
    assert dmarc(fake_dns, "example.com", ("pass", "example.com")).result == "pass"
    assert dmarc(fake_dns, "example.com", None, [PASS_EXAMPLE]).result == "pass"


def test_relaxed_alignment_takes_the_organizational_domain(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=none")
    sub_sig = DKIMResult("pass", "mail.example.com", "s1", "rsa-sha256", "abcdefgh")
    assert dmarc(fake_dns, "example.com", None, [sub_sig]).result == "pass"


def test_failing_or_unaligned_identifiers_fail(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    failed = DKIMResult("fail", "example.com", "s1", "rsa-sha256", "abcdefgh", "body hash mismatch")
    elsewhere = DKIMResult("pass", "evil.test", "s1", "rsa-sha256", "abcdefgh")
    result = dmarc(fake_dns, "example.com", ("softfail", "example.com"), [failed, elsewhere])
    assert (result.result, result.policy) == ("fail", "quarantine")
    assert dmarc(fake_dns, "example.com", ("pass", "evil.test")).result == "fail"


def test_reject_and_quarantine_under_enforce_and_monitor(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.reject.test", "v=DMARC1; p=reject")
    fake_dns.txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
    rejected = dmarc(fake_dns, "reject.test", ("pass", "evil.test"))
    quarantined = dmarc(fake_dns, "quarantine.test", ("pass", "evil.test"))
    assert dmarc_action(rejected, "enforce", sample=0.0) == "reject"
    assert dmarc_action(rejected, "monitor", sample=0.0) == "accept"
    assert dmarc_action(quarantined, "enforce", sample=0.0) == "quarantine"
    assert dmarc_action(quarantined, "monitor", sample=0.0) == "accept"


def test_subdomain_falls_back_to_the_organizational_record_and_its_sp(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    result = dmarc(fake_dns, "news.sub.example.com", ("fail", "news.sub.example.com"))
    assert (result.result, result.policy, result.domain) == ("fail", "quarantine", "example.com")
    assert fake_dns.asked("_dmarc.news.sub.example.com", "TXT")
    # without sp= the subdomain gets p=
    fake_dns.txt("_dmarc.other.test", "v=DMARC1; p=reject")
    assert dmarc(fake_dns, "a.other.test", None).policy == "reject"


def test_own_record_of_a_subdomain_wins(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=reject")
    fake_dns.txt("_dmarc.sub.example.com", "v=DMARC1; p=none")
    result = dmarc(fake_dns, "sub.example.com", None)
    assert (result.result, result.policy, result.domain) == ("fail", "none", "sub.example.com")
    assert fake_dns.asked("_dmarc.example.com") == []


def test_non_dmarc_txt_records_are_ignored(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.example.com", "v=spf1 -all")
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    assert dmarc(fake_dns, "example.com", ("pass", "example.com")).result == "pass"


def test_no_record_is_none(fake_dns: FakeDNS) -> None:
    result = dmarc(fake_dns, "sub.example.com", ("pass", "sub.example.com"))
    assert (result.result, result.policy) == ("none", None)
    assert fake_dns.asked("_dmarc.example.com", "TXT")


def test_dns_failure_is_temperror_never_a_pass(fake_dns: FakeDNS) -> None:
    fake_dns.servfail("_dmarc.example.com")
    assert dmarc(fake_dns, "example.com", ("pass", "example.com"), [PASS_EXAMPLE]).result == "temperror"
    fake_dns.timeout("_dmarc.slow.test")
    assert dmarc(fake_dns, "slow.test", None).result == "temperror"
    # a failure at the fallback lookup counts too
    assert dmarc(fake_dns, "sub.example.com", None).result == "temperror"


def test_several_records_or_a_broken_one_is_permerror(fake_dns: FakeDNS) -> None:
    fake_dns.txt("_dmarc.two.test", "v=DMARC1; p=reject")
    fake_dns.txt("_dmarc.two.test", "v=DMARC1; p=none")
    assert dmarc(fake_dns, "two.test", None).result == "permerror"
    fake_dns.txt("_dmarc.broken.test", "v=DMARC1; p=bounce")
    result = dmarc(fake_dns, "broken.test", None)
    assert result.result == "permerror" and "p='bounce'" in result.comment
    # RFC 7489 §6.6.3: a bad p= with a valid rua= counts as p=none
    fake_dns.txt("_dmarc.lenient.test", "v=DMARC1; p=bounce; rua=mailto:d@lenient.test")
    assert (dmarc(fake_dns, "lenient.test", None).result, dmarc(fake_dns, "lenient.test", None).policy) == \
        ("fail", "none")


def test_whole_message_signed_and_checked(fake_dns: FakeDNS) -> None:
    """The path inbound runs: verify DKIM, then DMARC on the From domain."""
    key = DKIMKey("example.com", "s1", "rsa-sha256", generate_private_key("rsa"))
    fake_dns.txt("s1._domainkey.example.com", public_key_record(key.private_key_pem))
    fake_dns.txt("_dmarc.example.com", "v=DMARC1; p=reject")
    msg = b"From: Alice <alice@example.com>\r\nTo: bob@dest.test\r\nSubject: hi\r\n\r\nHello\r\n"
    signed = DKIMSigner([key]).sign(msg) + msg
    resolver = DNSResolver([fake_dns.address], timeout=1.0)

    async def run(message: bytes) -> DMARCResult:
        return await check_message(message, ("fail", "evil.test"),
                                   await verify_dkim(message, resolver=resolver), resolver=resolver)

    assert asyncio.run(run(signed)).result == "pass"
    tampered = asyncio.run(run(signed.replace(b"Hello", b"Pay me")))
    assert (tampered.result, tampered.policy, dmarc_action(tampered, "enforce", sample=0.0)) == (
        "fail", "reject", "reject")
    no_from = asyncio.run(run(msg.replace(b"From: Alice <alice@example.com>\r\n", b"")))
    assert (no_from.result, no_from.comment) == ("permerror", "no From field")
