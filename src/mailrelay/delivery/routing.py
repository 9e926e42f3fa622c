"""Where mail for a domain goes: the ordered servers (hops) to try, from routes or DNS.

RFC 5321 §5.1 (MX in preference order, random among equal ones, the domain's own address as an
implicit MX), RFC 7505 (null MX), §4.1.3 domain literals, and `[delivery.routes]` smarthosts.
A pure function of the `Resolver` and the settings: no sockets of its own. `RouteCache` keeps
the plans for a short while, so a burst to one domain costs one MX lookup, not one per message.

Security: MX answers are chosen by whoever runs the recipient's DNS. Unless
`allow_private_destinations`, addresses in loopback, private, link-local, unspecified,
multicast, reserved or shared (RFC 6598) space are dropped, so a hostile MX cannot aim our
SMTP client at our own network. Configured routes are trusted and not filtered. At most
`MAX_MX_HOSTS` MX hosts are considered, so a huge MX answer cannot fan out into many lookups.

Exceptions:

    Exception
    └── RoutingError     status, text, permanent: bounce when permanent, else defer
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

from mailrelay.core.domains import bare_domain
from mailrelay.core.ips import is_address, is_public, is_public_text
from mailrelay.resolver.base import DNSTemporaryError, Resolver
from mailrelay.settings import DeliverySettings, Route, TLSPolicy

# Postfix smtp_mx_address_limit is 5 addresses; we count hosts and keep a little more room.
MAX_MX_HOSTS = 10
ROUTE_CACHE_SECONDS = 30.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address



@dataclass(frozen=True, slots=True)
class Hop:
    """One server to try."""

    host: str  # MX or smarthost name (for TLS verification and logs); an IP for literals
    ips: tuple[str, ...]  # addresses to try, in order
    port: int
    tls: TLSPolicy
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    domain: str
    hops: tuple[Hop, ...]  # in the order to try


class RoutingError(Exception):
    """No server to try. `status` is an RFC 3463 enhanced code; permanent → bounce, else defer."""

    def __init__(self, status: str, text: str, *, permanent: bool) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text
        self.permanent = permanent


async def plan_route(domain: str, *, resolver: Resolver, settings: DeliverySettings,
                     rng: random.Random | None = None) -> RoutePlan:
    """The hops for mail to `domain`, or RoutingError. `rng` shuffles equal-preference MX."""
    if not domain.startswith("["):
        domain = bare_domain(domain)
    route = _route_for(domain, settings.routes)
    if route is not None:
        return RoutePlan(domain, (await _route_hop(route, resolver),))
    tls = dict(settings.tls_policy).get(domain, settings.tls)
    if domain.startswith("["):
        ip = _literal_address(domain)
        if not settings.allow_private_destinations and not is_public(ip):
            raise RoutingError("5.4.4", f"{domain} is a private/loopback address", permanent=True)
        return RoutePlan(domain, (Hop(host=str(ip), ips=(str(ip),), port=settings.mx_port, tls=tls),))
    hosts = await _mx_hosts(domain, resolver, rng or random.Random())
    resolved = await asyncio.gather(*(_lookup(host, resolver) for host in hosts))
    hops: list[Hop] = []
    temporary: DNSTemporaryError | None = None
    filtered = False
    for host, found in zip(hosts, resolved, strict=True):
        if isinstance(found, DNSTemporaryError):
            temporary = temporary or found
            continue  # RFC 5321 §5.1: try the next host
        ips = found if settings.allow_private_destinations else [ip for ip in found if is_public_text(ip)]
        filtered = filtered or len(ips) < len(found)
        if ips:
            hops.append(Hop(host=host, ips=tuple(dict.fromkeys(ips)), port=settings.mx_port, tls=tls))
    if hops:
        return RoutePlan(domain, tuple(hops))
    if temporary is not None:  # an unanswered host might have had a usable address
        raise RoutingError("4.4.3", f"cannot resolve the MX hosts of {domain}: {temporary}", permanent=False)
    if filtered:
        raise RoutingError("5.4.4", f"MX for {domain} points only at private/loopback addresses", permanent=True)
    names = ", ".join(hosts)
    raise RoutingError("4.4.4", f"no address for the mail servers of {domain} ({names})", permanent=False)


class RouteCache:
    """Route plans by domain for ROUTE_CACHE_SECONDS. Failures are never cached (a deferral
    should look again)."""

    def __init__(self, *, resolver: Resolver, settings: DeliverySettings) -> None:
        self.resolver = resolver
        self.settings = settings
        self._routes: dict[str, tuple[float, RoutePlan]] = {}

    async def plan(self, domain: str) -> RoutePlan:
        now = time.monotonic()
        hit = self._routes.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        plan = await plan_route(domain, resolver=self.resolver, settings=self.settings)
        if len(self._routes) > 10_000:
            self._routes.clear()
        self._routes[domain] = (now + ROUTE_CACHE_SECONDS, plan)
        return plan


def _route_for(domain: str, routes: Sequence[Route]) -> Route | None:
    """The route for exactly `domain`, else the `*` route, else None."""
    exact = next((r for r in routes if r.domain == domain), None)
    return exact or next((r for r in routes if r.domain == "*"), None)


async def _route_hop(route: Route, resolver: Resolver) -> Hop:
    """A smarthost: an IP as is, a name resolved; its own port, TLS policy and credentials."""
    host = route.host.strip().rstrip(".").strip("[]").lower()
    if is_address(host):
        ips = [str(ipaddress.ip_address(host))]
    else:
        try:
            ips = await resolver.addresses(host)
        except DNSTemporaryError as exc:
            raise RoutingError("4.4.3", f"cannot resolve smarthost {host}: {exc}", permanent=False) from None
    if not ips:
        # A configuration mistake the operator can fix: defer, do not bounce.
        raise RoutingError("4.4.4", f"smarthost {host} has no address", permanent=False)
    return Hop(host=host, ips=tuple(dict.fromkeys(ips)), port=route.port,
               tls=route.tls, username=route.username, password=route.password)


def _literal_address(literal: str) -> IPAddress:
    """RFC 5321 §4.1.3: `[192.0.2.1]` or `[IPv6:2001:db8::1]`; anything else is 5.1.2."""
    inner = literal[1:-1] if literal.endswith("]") else ""
    bad = RoutingError("5.1.2", f"{literal} is not a valid address literal", permanent=True)
    try:
        ip: IPAddress = (ipaddress.IPv6Address(inner[5:]) if inner[:5].lower() == "ipv6:"
                         else ipaddress.IPv4Address(inner))
    except ValueError:
        raise bad from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise bad  # a zone index names one of our interfaces, not a remote host
    return ip


async def _mx_hosts(domain: str, resolver: Resolver, rng: random.Random) -> list[str]:
    """MX host names in the order to try: preference, shuffled within one preference."""
    try:
        answer = await resolver.mx(domain)
    except DNSTemporaryError as exc:
        raise RoutingError("4.4.3", f"MX lookup for {domain} failed: {exc}", permanent=False) from None
    if answer.kind == "nxdomain":
        raise RoutingError("5.1.2", f"domain {domain} does not exist", permanent=True)
    if answer.kind == "null":
        raise RoutingError("5.1.10", f"{domain} does not accept mail (null MX)", permanent=True)
    if answer.kind == "none":
        return [domain]  # RFC 5321 §5.1: the domain itself, as an implicit MX of preference 0
    hosts: list[str] = []
    for _pref, group in groupby(sorted(answer.hosts, key=lambda h: h[0]), key=lambda h: h[0]):
        names = list(dict.fromkeys(bare_domain(name) for _, name in group))
        rng.shuffle(names)  # RFC 5321 §5.1: spread the load over equal-preference hosts
        hosts.extend(n for n in names if n and n not in hosts)
    return hosts[:MAX_MX_HOSTS]


async def _lookup(host: str, resolver: Resolver) -> list[str] | DNSTemporaryError:
    try:
        return await resolver.addresses(host)
    except DNSTemporaryError as exc:
        return exc



