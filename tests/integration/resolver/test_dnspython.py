"""DNSResolver against a real DNS server on loopback (tests/support/dnsserver.py)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from mailrelay.delivery.routing import Hop, RoutingError, plan_route
from mailrelay.resolver.base import DNSTemporaryError, MXAnswer
from mailrelay.resolver.dnspython import DNSConfigError, DNSResolver, parse_nameserver
from mailrelay.settings import DeliverySettings
from tests.support.dnsserver import FakeDNS

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro
    return asyncio.run(main())


def resolver(fake_dns: FakeDNS, timeout: float = 2.0) -> DNSResolver:
    return DNSResolver([fake_dns.address], timeout=timeout)


def test_mx_sorted_by_preference_lower_case_without_dot(fake_dns: FakeDNS) -> None:
    fake_dns.mx("example.com", (20, "MX2.Example.COM."), (10, "mx1.example.com"), (30, "mx3.example.com"))
    answer = run(resolver(fake_dns).mx("EXAMPLE.com."))
    assert answer == MXAnswer("mx", ((10, "mx1.example.com"), (20, "mx2.example.com"), (30, "mx3.example.com")))


def test_equal_preference_hosts_are_all_returned(fake_dns: FakeDNS) -> None:
    fake_dns.mx("example.com", (10, "b.example.com"), (10, "a.example.com"), (5, "first.example.com"))
    answer = run(resolver(fake_dns).mx("example.com"))
    assert answer.kind == "mx"
    assert answer.hosts[0] == (5, "first.example.com")
    assert sorted(answer.hosts[1:]) == [(10, "a.example.com"), (10, "b.example.com")]


def test_null_mx(fake_dns: FakeDNS) -> None:
    fake_dns.null_mx("example.com")
    assert run(resolver(fake_dns).mx("example.com")) == MXAnswer("null")


def test_dot_among_real_mx_is_dropped(fake_dns: FakeDNS) -> None:
    fake_dns.null_mx("example.com")  # RFC 7505 §3 says not to mix; a broken zone does anyway
    fake_dns.mx("example.com", (10, "mx.example.com"))
    assert run(resolver(fake_dns).mx("example.com")) == MXAnswer("mx", ((10, "mx.example.com"),))


def test_nxdomain(fake_dns: FakeDNS) -> None:
    r = resolver(fake_dns)
    assert run(r.mx("nowhere.example")) == MXAnswer("nxdomain")
    assert run(r.addresses("nowhere.example")) == []
    assert run(r.txt("nowhere.example")) == []


def test_nodata(fake_dns: FakeDNS) -> None:
    fake_dns.nodata("example.com")
    r = resolver(fake_dns)
    assert run(r.mx("example.com")) == MXAnswer("none")
    assert run(r.addresses("example.com")) == []
    assert run(r.txt("example.com")) == []


def test_name_with_only_addresses_has_no_mx(fake_dns: FakeDNS) -> None:
    fake_dns.a("example.com", "8.8.8.8")
    assert run(resolver(fake_dns).mx("example.com")) == MXAnswer("none")


def test_invalid_names_do_not_exist_without_asking(fake_dns: FakeDNS) -> None:
    r = resolver(fake_dns)
    assert run(r.mx("a..example")) == MXAnswer("nxdomain")
    assert run(r.addresses("x" * 64 + ".example")) == []
    assert fake_dns.queries == []


def test_servfail_is_temporary(fake_dns: FakeDNS) -> None:
    fake_dns.servfail("example.com")
    with pytest.raises(DNSTemporaryError, match=r"MX example.com: no DNS server could answer .*SERVFAIL"):
        run(resolver(fake_dns).mx("example.com"))


def test_timeout_is_temporary(fake_dns: FakeDNS) -> None:
    fake_dns.timeout("example.com")
    started = time.monotonic()
    with pytest.raises(DNSTemporaryError, match=r"MX example.com: no answer within 0.4 s"):
        run(resolver(fake_dns, timeout=0.4).mx("example.com"))
    assert time.monotonic() - started < 2.0
    assert fake_dns.asked("example.com", "MX")


def test_nothing_listening_is_temporary() -> None:
    dead = FakeDNS().start()
    address = dead.address
    dead.stop()  # the port is closed now: ICMP port unreachable, or silence
    with pytest.raises(DNSTemporaryError):
        run(DNSResolver([address], timeout=0.4).mx("example.com"))


def test_addresses_ipv4_first(fake_dns: FakeDNS) -> None:
    fake_dns.a("mx.example.com", "2606:4700::1111", "8.8.8.8", "2001:4860:4860::8888", "1.1.1.1")
    assert run(resolver(fake_dns).addresses("MX.example.com.")) == [
        "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2001:4860:4860::8888"]
    assert {q.qtype for q in fake_dns.asked("mx.example.com")} == {"A", "AAAA"}


def test_addresses_only_ipv6(fake_dns: FakeDNS) -> None:
    fake_dns.a("mx.example.com", "2606:4700::1111")
    assert run(resolver(fake_dns).addresses("mx.example.com")) == ["2606:4700::1111"]


def test_addresses_one_family_failing_still_gives_the_other(fake_dns: FakeDNS) -> None:
    fake_dns.a("mx.example.com", "8.8.8.8", "2606:4700::1111")
    fake_dns.servfail("mx.example.com", "AAAA")
    fake_dns.a("v6.example.com", "2606:4700::1111")
    fake_dns.timeout("v6.example.com", "A")
    r = resolver(fake_dns, timeout=0.4)
    assert run(r.addresses("mx.example.com")) == ["8.8.8.8"]
    assert run(r.addresses("v6.example.com")) == ["2606:4700::1111"]


def test_addresses_one_family_failing_and_the_other_empty_raise(fake_dns: FakeDNS) -> None:
    fake_dns.a("mx.example.com", "2606:4700::1111")
    fake_dns.servfail("mx.example.com", "A")
    fake_dns.nodata("v4less.example.com")
    fake_dns.servfail("v4less.example.com", "AAAA")
    r = resolver(fake_dns)
    assert run(r.addresses("mx.example.com")) == ["2606:4700::1111"]
    with pytest.raises(DNSTemporaryError, match=r"AAAA v4less\.example\.com"):
        run(r.addresses("v4less.example.com"))  # "no address" is unproven: defer


def test_addresses_both_failing_raise(fake_dns: FakeDNS) -> None:
    fake_dns.servfail("mx.example.com")
    with pytest.raises(DNSTemporaryError, match=r"mx\.example\.com"):
        run(resolver(fake_dns).addresses("mx.example.com"))


def test_txt_strings_joined_without_separator(fake_dns: FakeDNS) -> None:
    spf = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(20)) + " -all"
    assert len(spf) > 255
    fake_dns.txt("example.com", spf)
    fake_dns.txt("example.com", "google-site-verification=abc")
    assert sorted(run(resolver(fake_dns).txt("example.com"))) == sorted([spf, "google-site-verification=abc"])


def test_large_txt_comes_over_tcp(fake_dns: FakeDNS) -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 3000  # larger than the 1232-byte EDNS buffer
    fake_dns.txt("sel._domainkey.example.com", key)
    assert run(resolver(fake_dns).txt("sel._domainkey.example.com")) == [key]
    assert [q.transport for q in fake_dns.asked("sel._domainkey.example.com")] == ["udp", "tcp"]


@pytest.mark.parametrize(("text", "address", "port"), [
    ("127.0.0.1", "127.0.0.1", 53),
    ("127.0.0.1:5353", "127.0.0.1", 5353),
    ("::1", "::1", 53),
    ("[::1]", "::1", 53),
    ("[::1]:5353", "::1", 5353),
    (" 192.0.2.53:53 ", "192.0.2.53", 53),
])
def test_nameserver_parsing(text: str, address: str, port: int) -> None:
    ns = parse_nameserver(text)
    assert (ns.address, ns.port) == (address, port)


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
                                  "[::1]5353", "::1:5353:x", "[fe80::1%eth0]:53", ""])
def test_bad_nameserver_names_the_setting(text: str) -> None:
    with pytest.raises(DNSConfigError, match="IP:PORT") as info:
        DNSResolver([text])
    assert info.value.key == "dns.nameservers"


def test_ip_port_nameserver_is_used(fake_dns: FakeDNS) -> None:
    fake_dns.a("example.com", "8.8.8.8")
    r = DNSResolver([fake_dns.address])
    assert r.nameservers == [fake_dns.address]
    assert run(r.addresses("example.com")) == ["8.8.8.8"]


def test_second_nameserver_answers_when_the_first_fails(fake_dns: FakeDNS) -> None:
    fake_dns.mx("example.com", (10, "mx.example.com"))
    with FakeDNS() as broken:
        broken.servfail("example.com")
        r = DNSResolver([broken.address, fake_dns.address], timeout=2.0)
        assert run(r.mx("example.com")) == MXAnswer("mx", ((10, "mx.example.com"),))


def test_unreadable_resolv_conf_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "resolv.conf"
    with pytest.raises(DNSConfigError, match=r"resolv.conf.*nameservers") as info:
        DNSResolver(resolv_conf=str(missing))
    assert info.value.key == "dns.nameservers"
    missing.write_text("# no nameserver lines\n")
    with pytest.raises(DNSConfigError, match="no nameservers"):
        DNSResolver(resolv_conf=str(missing))


def test_system_resolver_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search corp.example\nnameserver 127.0.0.1\nnameserver ::1\noptions ndots:5\n")
    r = DNSResolver(resolv_conf=str(conf))
    assert r.nameservers == ["127.0.0.1:53", "[::1]:53"]


def test_relative_names_are_asked_as_absolute(fake_dns: FakeDNS) -> None:
    fake_dns.a("mx.corp.example", "8.8.8.8")
    r = DNSResolver([fake_dns.address])
    assert run(r.addresses("mx")) == []
    assert {q.name for q in fake_dns.queries} == {"mx"}


# -- plan_route end to end ------------------------------------------------------------------


def test_plan_route_through_real_dns(fake_dns: FakeDNS) -> None:
    fake_dns.mx("example.com", (20, "backup.example.com"), (10, "a.example.com"), (10, "b.example.com"))
    fake_dns.a("a.example.com", "8.8.8.8", "2606:4700::1111")
    fake_dns.a("b.example.com", "1.1.1.1")
    fake_dns.a("backup.example.com", "9.9.9.9", "127.0.0.1")
    r = resolver(fake_dns)
    settings = DeliverySettings(mx_port=2525, tls_policy=(("example.com", "verify"),))
    firsts = set()
    for seed in range(12):
        plan = run(plan_route("example.com", resolver=r, settings=settings, rng=random.Random(seed)))
        hops = {h.host: h for h in plan.hops}
        assert [h.host for h in plan.hops][2] == "backup.example.com"
        assert hops["a.example.com"] == Hop("a.example.com", ("8.8.8.8", "2606:4700::1111"), 2525, "verify")
        assert hops["backup.example.com"].ips == ("9.9.9.9",)  # loopback removed
        firsts.add(plan.hops[0].host)
    assert firsts == {"a.example.com", "b.example.com"}


def test_plan_route_null_mx_and_servfail_through_real_dns(fake_dns: FakeDNS) -> None:
    fake_dns.null_mx("null.example")
    fake_dns.servfail("broken.example")
    r = resolver(fake_dns)
    with pytest.raises(RoutingError) as info:
        run(plan_route("null.example", resolver=r, settings=DeliverySettings()))
    assert (info.value.status, info.value.permanent) == ("5.1.10", True)
    with pytest.raises(RoutingError) as info:
        run(plan_route("broken.example", resolver=r, settings=DeliverySettings()))
    assert (info.value.status, info.value.permanent) == ("4.4.3", False)
