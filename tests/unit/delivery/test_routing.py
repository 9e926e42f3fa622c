"""plan_route: routes, domain literals, MX order, null MX, implicit MX, private addresses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence

import pytest

from mailrelay.delivery.routing import MAX_MX_HOSTS, Hop, RoutePlan, RoutingError, plan_route
from mailrelay.resolver.base import DNSTemporaryError, MXAnswer
from mailrelay.settings import DeliverySettings, Route

PUBLIC1, PUBLIC2, PUBLIC3 = "8.8.8.8", "1.1.1.1", "9.9.9.9"
PUBLIC6 = "2606:4700::1111"


class FakeResolver:
    """The Resolver protocol from dictionaries; a value of DNSTemporaryError is raised."""

    def __init__(self, mx: Mapping[str, MXAnswer | DNSTemporaryError] | None = None,
                 addresses: Mapping[str, Sequence[str] | DNSTemporaryError] | None = None) -> None:
        self._mx = dict(mx or {})
        self._addresses = dict(addresses or {})
        self.asked: list[tuple[str, str]] = []

    async def mx(self, domain: str) -> MXAnswer:
        self.asked.append(("MX", domain))
        answer = self._mx.get(domain, MXAnswer("nxdomain"))
        if isinstance(answer, DNSTemporaryError):
            raise answer
        return answer

    async def addresses(self, host: str) -> list[str]:
        self.asked.append(("ADDR", host))
        found = self._addresses.get(host, [])
        if isinstance(found, DNSTemporaryError):
            raise found
        return list(found)

    async def txt(self, name: str) -> list[str]:
        return []


def plan(domain: str, resolver: FakeResolver, settings: DeliverySettings | None = None,
         rng: random.Random | None = None) -> RoutePlan:
    return asyncio.run(plan_route(domain, resolver=resolver, settings=settings or DeliverySettings(), rng=rng))


def fails(domain: str, resolver: FakeResolver, settings: DeliverySettings | None = None) -> RoutingError:
    with pytest.raises(RoutingError) as info:
        plan(domain, resolver, settings)
    return info.value


def mx(*hosts: tuple[int, str]) -> MXAnswer:
    return MXAnswer("mx", hosts)


# -- MX -------------------------------------------------------------------------------------


def test_mx_in_preference_order_with_addresses_and_settings() -> None:
    resolver = FakeResolver(
        mx={"example.com": mx((20, "mx2.example.com"), (10, "mx1.example.com"))},
        addresses={"mx1.example.com": [PUBLIC1, PUBLIC6], "mx2.example.com": [PUBLIC2]})
    result = plan("Example.COM.", resolver, DeliverySettings(mx_port=2525, tls="encrypt"))
    assert result == RoutePlan("example.com", (
        Hop("mx1.example.com", (PUBLIC1, PUBLIC6), 2525, "encrypt"),
        Hop("mx2.example.com", (PUBLIC2,), 2525, "encrypt"),
    ))
    assert resolver.asked[0] == ("MX", "example.com")


def test_equal_preference_is_shuffled_but_preference_groups_keep_order() -> None:
    resolver = FakeResolver(
        mx={"example.com": mx((10, "a.example.com"), (10, "b.example.com"), (10, "c.example.com"),
                              (5, "first.example.com"), (50, "last.example.com"))},
        addresses={h: [PUBLIC1] for h in ("a.example.com", "b.example.com", "c.example.com",
                                          "first.example.com", "last.example.com")})
    orders = set()
    for seed in range(40):
        hosts = [hop.host for hop in plan("example.com", resolver, rng=random.Random(seed)).hops]
        assert hosts[0] == "first.example.com" and hosts[-1] == "last.example.com"
        assert sorted(hosts[1:4]) == ["a.example.com", "b.example.com", "c.example.com"]
        orders.add(tuple(hosts[1:4]))
    assert len(orders) >= 4  # 6 permutations; 40 seeded draws see most of them
    # The same seed gives the same order: the shuffle is the rng's, nothing else.
    assert plan("example.com", resolver, rng=random.Random(7)) == plan("example.com", resolver,
                                                                        rng=random.Random(7))


def test_default_rng_shuffles_too() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (10, "b.example.com"))},
                            addresses={"a.example.com": [PUBLIC1], "b.example.com": [PUBLIC2]})
    firsts = {plan("example.com", resolver).hops[0].host for _ in range(60)}
    assert firsts == {"a.example.com", "b.example.com"}  # chance of failing: 2 * 2**-60


def test_host_without_address_is_skipped() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "gone.example.com"), (20, "mx2.example.com"))},
                            addresses={"mx2.example.com": [PUBLIC2]})
    assert [h.host for h in plan("example.com", resolver).hops] == ["mx2.example.com"]


def test_host_failing_temporarily_is_skipped_when_another_resolves() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "slow.example.com"), (20, "mx2.example.com"))},
                            addresses={"slow.example.com": DNSTemporaryError("timeout"),
                                       "mx2.example.com": [PUBLIC2]})
    assert [h.host for h in plan("example.com", resolver).hops] == ["mx2.example.com"]


def test_all_hosts_without_address_is_temporary_4_4_4() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (20, "b.example.com"))})
    err = fails("example.com", resolver)
    assert (err.status, err.permanent) == ("4.4.4", False)
    assert "a.example.com" in err.text and "b.example.com" in err.text


def test_all_hosts_failing_temporarily_is_4_4_3() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (20, "b.example.com"))},
                            addresses={"a.example.com": DNSTemporaryError("SERVFAIL"), "b.example.com": []})
    err = fails("example.com", resolver)
    assert (err.status, err.permanent) == ("4.4.3", False)
    assert "SERVFAIL" in err.text


def test_mx_hosts_are_capped() -> None:
    hosts = [(i, f"mx{i}.example.com") for i in range(50)]
    resolver = FakeResolver(mx={"example.com": mx(*hosts)},
                            addresses={name: [PUBLIC1] for _, name in hosts})
    result = plan("example.com", resolver)
    assert [h.host for h in result.hops] == [f"mx{i}.example.com" for i in range(MAX_MX_HOSTS)]
    assert len([q for q in resolver.asked if q[0] == "ADDR"]) == MAX_MX_HOSTS


# -- answers that stop delivery -----------------------------------------------------------


def test_null_mx_is_permanent_5_1_10_without_address_lookups() -> None:
    resolver = FakeResolver(mx={"example.com": MXAnswer("null")})
    err = fails("example.com", resolver)
    assert (err.status, err.permanent) == ("5.1.10", True)
    assert "null MX" in err.text and "does not accept mail" in err.text
    assert resolver.asked == [("MX", "example.com")]


def test_nxdomain_is_permanent_5_1_2() -> None:
    err = fails("nowhere.example", FakeResolver())
    assert (err.status, err.permanent) == ("5.1.2", True)
    assert "nowhere.example" in str(err)


def test_mx_lookup_failure_is_temporary_4_4_3() -> None:
    resolver = FakeResolver(mx={"example.com": DNSTemporaryError("MX example.com: no answer within 5 s")})
    err = fails("example.com", resolver)
    assert (err.status, err.permanent) == ("4.4.3", False)
    assert "no answer within 5 s" in err.text


# -- implicit MX --------------------------------------------------------------------------


def test_no_mx_uses_the_domain_itself() -> None:
    resolver = FakeResolver(mx={"example.com": MXAnswer("none")},
                            addresses={"example.com": [PUBLIC1, PUBLIC6]})
    assert plan("example.com", resolver).hops == (Hop("example.com", (PUBLIC1, PUBLIC6), 25, "may"),)


def test_no_mx_and_no_address_is_temporary_4_4_4() -> None:
    err = fails("example.com", FakeResolver(mx={"example.com": MXAnswer("none")}))
    assert (err.status, err.permanent) == ("4.4.4", False)


# -- private destinations -----------------------------------------------------------------


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.0.1",
                                "0.0.0.0", "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fd00::1",
                                "fe80::1", "::", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"])
def test_private_addresses_are_removed(ip: str) -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "mx.example.com"))},
                            addresses={"mx.example.com": [ip, PUBLIC1]})
    assert plan("example.com", resolver).hops[0].ips == (PUBLIC1,)


def test_only_private_addresses_is_permanent_5_4_4() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (20, "b.example.com"))},
                            addresses={"a.example.com": ["127.0.0.1"], "b.example.com": ["10.0.0.1", "::1"]})
    err = fails("example.com", resolver)
    assert (err.status, err.permanent) == ("5.4.4", True)
    assert err.text == "MX for example.com points only at private/loopback addresses"


def test_private_host_is_skipped_for_a_public_one() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (20, "b.example.com"))},
                            addresses={"a.example.com": ["192.168.0.1"], "b.example.com": [PUBLIC2]})
    assert [h.host for h in plan("example.com", resolver).hops] == ["b.example.com"]


def test_private_and_temporary_failure_defers() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "a.example.com"), (20, "b.example.com"))},
                            addresses={"a.example.com": ["127.0.0.1"], "b.example.com": DNSTemporaryError("x")})
    assert fails("example.com", resolver).status == "4.4.3"  # b might have had a public address


def test_allow_private_destinations_keeps_them() -> None:
    resolver = FakeResolver(mx={"example.com": mx((10, "mx.example.com"))},
                            addresses={"mx.example.com": ["127.0.0.1", "::1"]})
    result = plan("example.com", resolver, DeliverySettings(allow_private_destinations=True))
    assert result.hops[0].ips == ("127.0.0.1", "::1")


# -- TLS policy -----------------------------------------------------------------------------


def test_per_domain_tls_policy_else_default() -> None:
    resolver = FakeResolver(mx={"bank.example": mx((10, "mx.bank.example")),
                                "other.example": mx((10, "mx.other.example"))},
                            addresses={"mx.bank.example": [PUBLIC1], "mx.other.example": [PUBLIC2]})
    settings = DeliverySettings(tls="may", tls_policy=(("bank.example", "verify"),))
    assert plan("BANK.example", resolver, settings).hops[0].tls == "verify"
    assert plan("other.example", resolver, settings).hops[0].tls == "may"


# -- domain literals ------------------------------------------------------------------------


def test_ipv4_literal_is_one_hop_without_dns() -> None:
    resolver = FakeResolver()
    result = plan("[8.8.4.4]", resolver, DeliverySettings(mx_port=2525))
    assert result == RoutePlan("[8.8.4.4]", (Hop("8.8.4.4", ("8.8.4.4",), 2525, "may"),))
    assert resolver.asked == []


def test_ipv6_literal() -> None:
    result = plan("[IPv6:2606:4700:0::1111]", FakeResolver())
    assert result.hops == (Hop(PUBLIC6, (PUBLIC6,), 25, "may"),)


@pytest.mark.parametrize("literal", ["[999.1.1.1]", "[::1]", "[IPv6:8.8.8.8]", "[mail.example.com]",
                                     "[8.8.8.8", "[IPv6:fe80::1%eth0]", "[]"])
def test_bad_literal_is_permanent_5_1_2(literal: str) -> None:
    err = fails(literal, FakeResolver(), DeliverySettings(allow_private_destinations=True))
    assert (err.status, err.permanent) == ("5.1.2", True)


def test_private_literal_is_refused_unless_allowed() -> None:
    err = fails("[127.0.0.1]", FakeResolver())
    assert (err.status, err.permanent) == ("5.4.4", True)
    allowed = plan("[IPv6:::1]", FakeResolver(), DeliverySettings(allow_private_destinations=True))
    assert allowed.hops[0].ips == ("::1",)


# -- routes ---------------------------------------------------------------------------------


def test_route_for_the_domain_overrides_mx() -> None:
    route = Route(domain="example.com", host="smtp.relay.example", port=587, username="u", password="s3cret",
                  tls="encrypt")
    resolver = FakeResolver(mx={"example.com": mx((10, "mx.example.com"))},
                            addresses={"smtp.relay.example": [PUBLIC3], "mx.example.com": [PUBLIC1]})
    result = plan("example.com", resolver, DeliverySettings(routes=(route,), tls="verify"))
    assert result.hops == (Hop("smtp.relay.example", (PUBLIC3,), 587, "encrypt", "u", "s3cret"),)
    assert ("MX", "example.com") not in resolver.asked


def test_exact_route_wins_over_star_and_star_catches_the_rest() -> None:
    routes = (Route(domain="*", host="8.8.8.8", port=2525), Route(domain="example.com", host="1.1.1.1"))
    settings = DeliverySettings(routes=routes)
    assert plan("example.com", FakeResolver(), settings).hops[0].ips == ("1.1.1.1",)
    star = plan("other.example", FakeResolver(), settings)
    assert star.hops == (Hop("8.8.8.8", ("8.8.8.8",), 2525, "may"),)
    assert plan("[9.9.9.9]", FakeResolver(), settings).hops[0].ips == ("8.8.8.8",)


def test_route_to_an_ipv6_address_or_private_smarthost() -> None:
    # Routes are the operator's own choice: private addresses are allowed there.
    settings = DeliverySettings(routes=(Route(domain="*", host="[::1]"), Route(domain="a.example", host="10.0.0.5")))
    assert plan("x.example", FakeResolver(), settings).hops[0].ips == ("::1",)
    assert plan("a.example", FakeResolver(), settings).hops[0].ips == ("10.0.0.5",)


def test_route_host_without_address_or_failing_defers() -> None:
    settings = DeliverySettings(routes=(Route(domain="*", host="relay.example"),))
    err = fails("example.com", FakeResolver(), settings)
    assert (err.status, err.permanent) == ("4.4.4", False)
    err = fails("example.com", FakeResolver(addresses={"relay.example": DNSTemporaryError("timeout")}), settings)
    assert (err.status, err.permanent) == ("4.4.3", False)


def test_hop_repr_hides_the_password() -> None:
    hop = Hop("smtp.relay.example", (PUBLIC1,), 587, "encrypt", "user", "s3cret-pass")
    assert "s3cret-pass" not in repr(hop) and "user" in repr(hop)
    assert "s3cret-pass" not in repr(RoutePlan("example.com", (hop,)))


def test_routing_error_carries_its_parts() -> None:
    err = RoutingError("5.1.10", "no mail here", permanent=True)
    assert (str(err), err.status, err.text, err.permanent) == ("5.1.10 no mail here", "5.1.10", "no mail here", True)
