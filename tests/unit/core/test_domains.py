"""The domain-name and address rules of core.domains."""

from __future__ import annotations

import pytest

from mailrelay.core.domains import (
    DomainError,
    bare_domain,
    lenient_domain,
    normalize_domain,
    owner_domain,
    parent_domains,
    split_address,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ("Example.COM.", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ("a-b.c-d.example", "a-b.c-d.example"),
])
def test_domain_names(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "localhost", "exa mple.com", "-a.example", "a..example",
                                 "x" * 64 + ".example", "1.2.3.4", "a@example.com", "straße.de",
                                 "a_b.example"])
def test_bad_domain_names(raw: str) -> None:
    with pytest.raises(DomainError):
        normalize_domain(raw)


def test_lenient_domain_never_raises() -> None:
    # For names read from mail: compared, never refused (IDNA 2003 maps ß, as the codec does).
    assert lenient_domain(" Bücher.Example. ") == "xn--bcher-kva.example"
    assert lenient_domain("EXAMPLE.com..") == "example.com"
    assert lenient_domain("a..b") == "a..b"  # the codec refuses it: kept as given
    assert lenient_domain("straße.de") == "strasse.de"
    assert bare_domain("Mail.Example.COM.") == "mail.example.com"


def test_split_address() -> None:
    assert split_address(" Ann.Lee+x@Bücher.example ") == ("ann.lee+x", "xn--bcher-kva.example")
    for bad in ("ann", "@example.com", "a b@example.com", ".ann@example.com", "a..b@example.com",
                "x" * 65 + "@example.com", "ann@localhost"):
        with pytest.raises(DomainError):
            split_address(bad)


def test_parents_and_owner() -> None:
    assert parent_domains("a.news.example.com") == ["news.example.com", "example.com"]
    assert owner_domain(["example.com"], "X.Example.COM.") == "example.com"
    assert owner_domain(frozenset({"example.com"}), "example.net") is None
