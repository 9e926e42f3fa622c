"""The real resolvers: `Resolver` on dnspython's asyncio stub resolver, `BlockingResolver` on
its blocking one (for pyspf's worker threads), both asking the same configured servers.

Security: answers come from the network and are untrusted. Names are returned as text (lower
case, no trailing dot) and never interpreted here; callers decide what an address may be (see
`delivery.routing` for the private-address check). No cache: the upstream recursive resolver
has one, and a cache here would keep stale answers across a config reload.

Exceptions:

    Exception
    ├── DNSConfigError       bad `[dns]` settings or unreadable /etc/resolv.conf (at construction)
    └── DNSTemporaryError    (resolver.base) timeout, SERVFAIL, no server answered
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from mailrelay.resolver.base import DNSTemporaryError, MXAnswer, Record

SYSTEM_RESOLV_CONF = "/etc/resolv.conf"

# RFC 6891 §6.2.5 and DNS flag day 2020: 1232 bytes avoids IP fragmentation; larger answers
# come back truncated and dnspython retries them over TCP.
EDNS_PAYLOAD = 1232

_Missing = Literal["nxdomain", "none"]


class DNSConfigError(Exception):
    """The `[dns]` settings (or the system's resolv.conf) cannot be used; `key` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class DNSResolver:
    """Asks `nameservers` ("IP", "IP:PORT", "[IPv6]:PORT"), or the system's resolvers when empty.

    `timeout` bounds each question (all retries and servers included); past it the question is
    a `DNSTemporaryError`.
    """

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0, *,
                 resolv_conf: str = SYSTEM_RESOLV_CONF) -> None:
        resolver = stub_resolver(dns.asyncresolver.Resolver, nameservers, timeout, resolv_conf)
        self._timeout = timeout
        self._resolver = resolver

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as "IP:PORT" / "[IPv6]:PORT" (for logs and diagnostics)."""
        out = []
        for ns in self._resolver.nameservers:
            address, port = (ns.address, ns.port) if isinstance(ns, dns.nameserver.Do53Nameserver) \
                else (str(ns), self._resolver.port)
            out.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return out

    async def mx(self, domain: str) -> MXAnswer:
        """MX hosts sorted by preference (equal ones in the server's order); RFC 7505 null MX."""
        answer = await self._resolve(domain, dns.rdatatype.MX)
        if isinstance(answer, str):
            return MXAnswer(answer)
        records = [(rr.preference, rr.exchange) for rr in answer if isinstance(rr, MX)]
        # RFC 7505 §3: a single MX whose exchange is the root "." means "no mail here".
        usable = [(pref, _host_text(name)) for pref, name in records if name != dns.name.root]
        if not usable:
            return MXAnswer("null") if records else MXAnswer("none")
        # A "." among other MX records violates RFC 7505 §3; that entry alone is unusable.
        return MXAnswer("mx", tuple(sorted(usable, key=lambda h: h[0])))

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses; one family failing temporarily is tolerated if the other
        gave addresses."""
        results = await asyncio.gather(self._addresses(host, dns.rdatatype.A),
                                       self._addresses(host, dns.rdatatype.AAAA),
                                       return_exceptions=True)
        found: list[str] = []
        failure: DNSTemporaryError | None = None
        for result in results:
            if isinstance(result, DNSTemporaryError):
                failure = failure or result
            elif isinstance(result, BaseException):
                raise result
            else:
                found.extend(result)
        # With one family failed and the other empty, "no address" is unproven: report the
        # failure so the caller defers rather than bounces.
        if failure is not None and not found:
            raise failure
        return found

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined without separator (RFC 7208 §3.3)."""
        answer = await self._resolve(name, dns.rdatatype.TXT)
        if isinstance(answer, str):
            return []
        return [b"".join(rr.strings).decode("utf-8", errors="replace")
                for rr in answer if isinstance(rr, TXT)]

    async def ptr(self, ip: str) -> list[str]:
        """The names the PTR records of `ip` give (reverse DNS; lower case, no trailing dot);
        [] when there are none or `ip` is not an IP address. Not confirmed: see iprev."""
        try:
            name = dns.reversename.from_address(ip.strip().partition("%")[0])
        except (dns.exception.SyntaxError, ValueError):
            return []
        answer = await self._resolve(name.to_text(), dns.rdatatype.PTR)
        if isinstance(answer, str):
            return []
        return [_host_text(rr.target) for rr in answer if isinstance(rr, PTR)]

    async def _addresses(self, host: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        answer = await self._resolve(host, rdtype)
        if isinstance(answer, str):
            return []
        return [rr.address for rr in answer if isinstance(rr, A | AAAA)]

    async def _resolve(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer | _Missing:
        """The answer, or why there is none; temporary failures raise DNSTemporaryError."""
        what = f"{dns.rdatatype.to_text(rdtype)} {name}"
        try:
            qname = _absolute(name)
        except dns.exception.DNSException:
            # Not encodable as a DNS name (empty label, over 255 octets, bad IDNA): such a
            # name cannot exist, which is a permanent answer, not a reason to retry.
            return "nxdomain"
        try:
            return await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return "nxdomain"
        except dns.resolver.NoAnswer:
            return "none"
        except dns.exception.Timeout:
            raise DNSTemporaryError(f"{what}: no answer within {self._timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:
            raise DNSTemporaryError(f"{what}: no DNS server could answer ({_servers_said(exc)})") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DNSTemporaryError(f"{what}: {exc.__class__.__name__}: {exc}") from None


class BlockingDNSResolver:
    """`BlockingResolver` for code in a worker thread: the same servers and limits as
    DNSResolver, asked with dnspython's blocking resolver."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0, *,
                 resolv_conf: str = SYSTEM_RESOLV_CONF) -> None:
        self._resolver = stub_resolver(dns.resolver.Resolver, nameservers, timeout, resolv_conf)
        self._timeout = timeout

    @property
    def timeout(self) -> float:
        return self._timeout

    def query(self, name: str, qtype: str, timeout: float) -> list[Record]:
        """The `qtype` records at `name` within min(`timeout`, self.timeout) seconds: addresses
        and PTR names as text, MX as (preference, host), TXT as its strings; [] for NXDOMAIN,
        no data, an impossible name or a CNAME loop; otherwise DNSTemporaryError."""
        lifetime = max(0.01, min(timeout, self._timeout))
        what = f"{qtype} {name}"
        try:
            qname = dns.name.from_text(name, origin=dns.name.root)
            answer = self._resolver.resolve(qname, dns.rdatatype.from_text(qtype), search=False,
                                            lifetime=lifetime, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.name.EmptyLabel,
                dns.name.LabelTooLong, dns.name.NameTooLong):
            return []  # no such name (or not a possible one): an answer, not an error
        except dns.exception.Timeout:
            raise DNSTemporaryError(f"DNS {what}: no answer within {lifetime:g} s") from None
        except dns.resolver.NoNameservers as exc:
            if _cname_loop(exc):
                # A CNAME loop never resolves: a permanent "no such data" (RFC 7208 §5.5 says
                # to skip such a name in SPF's "ptr" rather than fail the whole check).
                return []
            raise DNSTemporaryError(f"DNS {what}: no server could answer (SERVFAIL or refused)") from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DNSTemporaryError(f"DNS {what}: {exc.__class__.__name__}: {exc}") from None
        # CNAMEs were followed by dnspython; the records are those of the name asked.
        records: list[Record] = []
        for rdata in answer.rrset or ():
            if qtype in ("A", "AAAA"):
                records.append(rdata.address)
            elif qtype == "MX":
                records.append((rdata.preference, rdata.exchange.to_text(omit_final_dot=True)))
            elif qtype == "PTR":
                records.append(rdata.target.to_text(omit_final_dot=True))
            elif qtype in ("TXT", "SPF"):
                records.append(list(rdata.strings))
        return records


def _cname_loop(exc: dns.resolver.NoNameservers) -> bool:
    errors = exc.kwargs.get("errors") or []
    return bool(errors) and all(isinstance(entry[3], dns.message.ChainTooLong) for entry in errors)


R = TypeVar("R", bound=dns.resolver.BaseResolver)


def stub_resolver(cls: type[R], nameservers: Sequence[str], timeout: float, resolv_conf: str) -> R:
    """A dnspython resolver (blocking or async `cls`) asking `nameservers`, or the system's
    from `resolv_conf` when there are none; no cache, EDNS at EDNS_PAYLOAD, `timeout` per
    question. Raises DNSConfigError naming the key to fix."""
    if timeout <= 0:
        raise DNSConfigError("dns.timeout", f"expected a number of seconds above 0, got {timeout!r}")
    if isinstance(nameservers, str):  # a common slip: "127.0.0.1" instead of ["127.0.0.1"]
        nameservers = (nameservers,)
    if nameservers:
        resolver = cls(configure=False)
        resolver.nameservers = [parse_nameserver(ns) for ns in nameservers]
    else:
        try:
            resolver = cls(filename=resolv_conf, configure=True)
        except (dns.exception.DNSException, ValueError) as exc:
            raise DNSConfigError(
                "dns.nameservers",
                f"cannot use the system resolver from {resolv_conf} ({exc}); "
                'set [dns] nameservers = ["IP"] instead') from None
    resolver.lifetime = timeout
    # The per-server timeout stays shorter (2 s by default) so a dead first server leaves
    # time to ask the next one.
    resolver.timeout = min(resolver.timeout, timeout)
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    resolver.cache = None  # also: shared across threads, no shared mutable state
    return resolver


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """'192.0.2.53' / '192.0.2.53:5353' / '::1' / '[::1]:5353' → a UDP+TCP nameserver."""
    bad = DNSConfigError("dns.nameservers",
                         f'expected "IP" or "IP:PORT" (IPv6 as "[::1]:5353"), got {text!r}')
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise bad
            port_text = rest[1:]
    elif text.count(":") == 1:  # IPv4:PORT; bare IPv6 has at least two colons
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise bad from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise bad  # a zone index would need an interface; not worth the ambiguity
    port = 53
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise bad
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(str(address), port)


def _absolute(name: str) -> dns.name.Name:
    """`name` as an absolute DNS name: the search list of resolv.conf never applies."""
    if not name.strip("."):
        raise dns.name.EmptyLabel
    return dns.name.from_text(name, origin=dns.name.root)


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _servers_said(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    said = [f"{entry[0]} said {entry[3]}" for entry in errors[:3]]
    return "; ".join(said) or "SERVFAIL or refused"
