"""verify_dkim against keys published on a real DNS server on loopback (tests/support/dnsserver.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailrelay.mailauth.dkimsign import DKIMKey, DKIMSigner, generate_private_key, public_key_record
from mailrelay.mailauth.dkimverify import DKIMResult, verify_dkim
from mailrelay.resolver.dnspython import DNSResolver
from tests.support.dnsserver import FakeDNS

MSG = (b"From: Alice <alice@example.com>\r\nTo: bob@dest.test\r\nSubject: hello\r\n"
       b"Message-ID: <1@example.com>\r\n\r\nHello Bob,\r\nsee you.\r\n")

RSA = generate_private_key("rsa")
ED = generate_private_key("ed25519")


def sign(message: bytes, *keys: DKIMKey) -> bytes:
    return DKIMSigner(keys).sign(message) + message


def publish(fake_dns: FakeDNS, key: DKIMKey) -> None:
    fake_dns.txt(f"{key.selector}._domainkey.{key.domain}", public_key_record(key.private_key_pem))


def check(fake_dns: FakeDNS, message: bytes, *, dns_timeout: float = 2.0, max_signatures: int = 5,
          timeout: float = 10.0) -> list[DKIMResult]:
    resolver = DNSResolver([fake_dns.address], timeout=dns_timeout)
    return asyncio.run(verify_dkim(message, resolver=resolver, max_signatures=max_signatures, timeout=timeout))


RSA_KEY = DKIMKey("example.com", "s1", "rsa-sha256", RSA)
ED_KEY = DKIMKey("example.com", "e1", "ed25519-sha256", ED)


def test_unsigned_message_has_no_results(fake_dns: FakeDNS) -> None:
    assert check(fake_dns, MSG) == []
    assert fake_dns.queries == []


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_signed_message_passes(fake_dns: FakeDNS, key: DKIMKey) -> None:
    publish(fake_dns, key)
    signed = sign(MSG, key)
    [result] = check(fake_dns, signed)
    assert result.result == "pass", result
    assert (result.domain, result.selector, result.algorithm) == ("example.com", key.selector, key.algorithm)
    assert len(result.header_b) == 8 and signed.replace(b"\r\n ", b"").find(b"b=" + result.header_b.encode()) > 0
    assert result.comment == ""


def test_lf_line_endings_pass_too(fake_dns: FakeDNS) -> None:
    publish(fake_dns, RSA_KEY)
    assert [r.result for r in check(fake_dns, sign(MSG, RSA_KEY).replace(b"\r\n", b"\n"))] == ["pass"]


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_modified_body_fails(fake_dns: FakeDNS, key: DKIMKey) -> None:
    publish(fake_dns, key)
    [result] = check(fake_dns, sign(MSG, key).replace(b"see you", b"send money"))
    assert (result.result, result.comment) == ("fail", "body hash mismatch")


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_modified_signed_header_fails(fake_dns: FakeDNS, key: DKIMKey) -> None:
    publish(fake_dns, key)
    [result] = check(fake_dns, sign(MSG, key).replace(b"Subject: hello", b"Subject: hellO"))
    assert (result.result, result.comment) == ("fail", "signature did not verify")


def test_added_second_from_fails(fake_dns: FakeDNS) -> None:
    publish(fake_dns, RSA_KEY)
    [result] = check(fake_dns, b"From: mallory@evil.test\r\n" + sign(MSG, RSA_KEY))
    assert result.result == "fail"


def test_missing_key_is_permerror(fake_dns: FakeDNS) -> None:
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert result.result == "permerror"
    assert result.comment == "no key at s1._domainkey.example.com"


def test_revoked_key_is_permerror(fake_dns: FakeDNS) -> None:
    fake_dns.txt("s1._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert (result.result, result.comment) == ("permerror", "key revoked")


def test_garbage_key_is_permerror(fake_dns: FakeDNS) -> None:
    fake_dns.txt("s1._domainkey.example.com", "v=DKIM1; k=rsa; p=bm90IGEga2V5")
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert (result.result, result.comment) == ("permerror", "unusable key record")


def test_wrong_key_fails(fake_dns: FakeDNS) -> None:
    fake_dns.txt("s1._domainkey.example.com", public_key_record(generate_private_key("rsa")))
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert result.result == "fail"


def test_key_type_not_matching_algorithm_is_permerror(fake_dns: FakeDNS) -> None:
    fake_dns.txt("s1._domainkey.example.com", public_key_record(ED))
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert (result.result, result.comment) == ("permerror", "key type does not match a=")


def test_dns_timeout_is_temperror_within_the_bound(fake_dns: FakeDNS) -> None:
    fake_dns.timeout("s1._domainkey.example.com")
    start = time.monotonic()
    [result] = check(fake_dns, sign(MSG, RSA_KEY), dns_timeout=5.0, timeout=0.5)
    assert result.result == "temperror"
    assert time.monotonic() - start < 3


def test_servfail_is_temperror(fake_dns: FakeDNS) -> None:
    fake_dns.servfail("s1._domainkey.example.com")
    [result] = check(fake_dns, sign(MSG, RSA_KEY))
    assert result.result == "temperror"


def test_two_signatures_with_different_results(fake_dns: FakeDNS) -> None:
    good = DKIMKey("example.com", "good", "rsa-sha256", RSA)
    other = DKIMKey("other.test", "gone", "ed25519-sha256", ED)
    publish(fake_dns, good)
    signed = sign(MSG, good, other)
    results = check(fake_dns, signed)
    assert [(r.result, r.domain, r.selector) for r in results] == [
        ("pass", "example.com", "good"), ("permerror", "other.test", "gone")]
    assert results[0].header_b != results[1].header_b


def test_signatures_beyond_the_limit_are_ignored(fake_dns: FakeDNS) -> None:
    keys = [DKIMKey("example.com", f"s{i}", "ed25519-sha256", ED) for i in range(4)]
    for key in keys:
        publish(fake_dns, key)
    results = check(fake_dns, sign(MSG, *keys), max_signatures=2)
    assert [r.selector for r in results] == ["s0", "s1"]
    assert fake_dns.asked("s3._domainkey.example.com") == []


def test_malformed_signature_is_permerror(fake_dns: FakeDNS) -> None:
    [result] = check(fake_dns, b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1\r\n" + MSG)
    assert (result.result, result.domain, result.selector) == ("permerror", "example.com", "s1")


def test_signature_not_covering_from_is_permerror(fake_dns: FakeDNS) -> None:
    publish(fake_dns, RSA_KEY)
    signed = sign(MSG, RSA_KEY)
    # our signer always covers From, so take it out of h=: the rule applies before any crypto
    forged = signed.replace(b"h=from:from:", b"h=", 1)
    assert forged != signed
    [result] = check(fake_dns, forged)
    assert (result.result, result.comment) == ("permerror", "From not signed")


def test_large_body(fake_dns: FakeDNS) -> None:
    publish(fake_dns, RSA_KEY)
    big = MSG + b"x" * 998 + b"\r\n" + (b"line of text\r\n" * 200_000)
    assert [r.result for r in check(fake_dns, sign(big, RSA_KEY))] == ["pass"]
