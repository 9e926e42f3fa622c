"""SPF (RFC 7208): may the client's IP address send mail for the MAIL FROM (or HELO) domain?

`SPFChecker.check(ip, mail_from, helo)` returns an `SPFResult` and never raises. The evaluation
is pyspf's (the RFC 7208 reference implementation), run in a small thread pool because it is
synchronous. Its DNS questions go to the configured nameservers through dnspython: this module
replaces `spf.DNSLookup` once, with a function that asks the resolver of the checker running in
the current thread, so several checkers (tests, config reloads) can coexist in one process.

Every DNS failure (timeout, SERVFAIL, refusal, no server) is a `temperror`; the whole check is
bounded by `check_timeout` (RFC 7208 §4.6.4), after which it is a `temperror` too.

Security: the SPF records, names and addresses come from DNS and from the client, untrusted.
pyspf enforces the RFC 7208 §4.6.4 limits (10 DNS-querying terms, 2 void lookups), so a hostile
record costs a bounded number of questions; `comment` and `explanation` carry text from DNS and
must be sanitized before they reach a reply or a header (`received_spf` does so).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import spf

from mailrelay.resolver.dnspython import SYSTEM_RESOLV_CONF, stub_resolver

Result: TypeAlias = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
Scope: TypeAlias = Literal["mailfrom", "helo"]

RESULTS: frozenset[str] = frozenset(
    ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"))

# RFC 7208 §4.6.4: "at least 20 seconds" is suggested for the whole evaluation.
DEFAULT_CHECK_TIMEOUT = 20.0

_Record: TypeAlias = tuple[tuple[str, str], object]


@dataclass(frozen=True, slots=True)
class SPFResult:
    """One SPF evaluation. `domain` is the identity's domain (MAIL FROM's, or the HELO name for
    a null sender); `comment` says why, for logs and headers; `explanation` is the domain's own
    `exp=` text on a fail (RFC 7208 §6.2), "" otherwise."""

    result: Result
    domain: str
    scope: Scope
    comment: str
    explanation: str = ""


class SPFChecker:
    """Evaluates SPF with DNS from `nameservers` ("IP", "IP:PORT"; the system's when empty).

    `timeout` bounds one DNS question, `check_timeout` the whole check; at most `max_workers`
    checks run at once (the rest wait, within their own `check_timeout`).
    """

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = 5.0,
                 check_timeout: float = DEFAULT_CHECK_TIMEOUT, max_workers: int = 4,
                 resolv_conf: str = SYSTEM_RESOLV_CONF) -> None:
        if check_timeout <= 0:
            raise ValueError(f"check_timeout must be above 0, got {check_timeout!r}")
        self._dns = _SyncResolver(nameservers, timeout, resolv_conf)
        self._check_timeout = check_timeout
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="spf")

    def close(self) -> None:
        """Stop the worker threads (a check still running finishes in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def check(self, ip: str, mail_from: str, helo: str) -> SPFResult:
        """The SPF result for a client at `ip` that said HELO `helo` and MAIL FROM `mail_from`
        ("" or "<>" for the null sender, which checks postmaster@`helo`, RFC 7208 §2.4)."""
        mail_from = mail_from.strip().removeprefix("<").removesuffix(">")
        helo = helo.strip()
        scope: Scope = "mailfrom" if mail_from else "helo"
        domain = (mail_from.rpartition("@")[2] if mail_from else helo).lower().rstrip(".")
        try:
            address = _client_address(ip)
        except ValueError:
            return SPFResult("temperror", domain, scope, f"client address {ip!r} is not an IP address")
        if scope == "helo" and (not helo or helo.startswith("[")):
            # RFC 7208 §2.3: only a HELO that is a domain name can be checked.
            return SPFResult("none", domain, scope, "HELO is not a domain name")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._evaluate, address, mail_from, helo)
            result, comment, explanation = await asyncio.wait_for(future, self._check_timeout)
        except TimeoutError:
            return SPFResult("temperror", domain, scope,
                             f"SPF check took over {self._check_timeout:g} s")
        except RuntimeError as exc:  # the executor was shut down
            return SPFResult("temperror", domain, scope, f"SPF checker unavailable: {exc}")
        return SPFResult(result, domain, scope, comment, explanation)

    def _evaluate(self, ip: str, mail_from: str, helo: str) -> tuple[Result, str, str]:
        """Run pyspf in this worker thread with this checker's resolver."""
        _current.resolver = self._dns
        try:
            query = spf.query(i=ip, s=mail_from, h=helo, timeout=self._dns.timeout,
                              querytime=self._check_timeout)
            query.set_default_explanation("")  # so `explanation` is only ever the domain's text
            result, _code, text = query.check()
        except Exception as exc:  # pyspf bug or an unforeseen DNS error: never a crash, never a pass
            return "temperror", f"SPF evaluation failed: {exc.__class__.__name__}: {exc}", ""
        finally:
            _current.resolver = None
        if result not in RESULTS:  # "ambiguous" and the like exist only in pyspf's other modes
            return "permerror", f"unexpected SPF result {result!r}", ""
        return cast(Result, result), _comment(result, query, ip), text if result == "fail" else ""


def _comment(result: str, query: spf.query, ip: str) -> str:
    if result in ("temperror", "permerror"):
        return str(getattr(query, "prob", "") or result)
    if result == "none":
        return f"no SPF record for {query.o}"
    mechanism = getattr(query, "mechanism", None)
    matched = f"'{mechanism}'" if mechanism else "no mechanism (default neutral)"
    return f"{ip} matched {matched} of {query.o}"


async def check_spf(ip: str, mail_from: str, helo: str, *, checker: SPFChecker) -> SPFResult:
    """`checker.check(ip, mail_from, helo)`: the SPF result, never an exception."""
    return await checker.check(ip, mail_from, helo)


def authres_spf(result: SPFResult) -> str:
    """The SPF part of Authentication-Results (RFC 8601 §2.7.2), e.g.
    `spf=pass smtp.mailfrom=example.com`."""
    return f"spf={result.result} smtp.{result.scope}={_value(result.domain)}"


def received_spf(result: SPFResult, *, ip: str, mail_from: str, helo: str, receiver: str) -> bytes:
    """A Received-SPF header field (RFC 7208 §9.1), CRLF-terminated, to prepend."""
    comment = " ".join(_CTEXT_UNSAFE.sub(" ", result.comment).split())[:200]
    pairs = [("client-ip", ip), ("envelope-from", mail_from), ("helo", helo),
             ("receiver", receiver), ("identity", result.scope)]
    fields = "; ".join(f"{key}={_value(value)}" for key, value in pairs)
    return f"Received-SPF: {result.result} ({receiver}: {comment}) {fields}\r\n".encode(
        "utf-8", "replace")


# RFC 5322 §3.2.4 dot-atom text is safe unquoted; anything else is sent as a quoted-string.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.:-]+")
_CTEXT_UNSAFE = re.compile(r"[()\\\x00-\x1f\x7f]+")  # parentheses, escapes, controls in (comments)


def _value(text: str) -> str:
    if _DOT_ATOM.fullmatch(text):
        return text
    cleaned = re.sub(r"[\x00-\x1f\x7f]", "", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{cleaned}"'


def _client_address(ip: str) -> str:
    """The address pyspf evaluates: no zone index, IPv4-mapped IPv6 as IPv4 (RFC 7208 §5)."""
    address = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]").partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# -- DNS -------------------------------------------------------------------------------------


class _Current(threading.local):
    resolver: _SyncResolver | None = None


_current = _Current()


class _SyncResolver:
    """pyspf's DNS questions, asked of our nameservers with dnspython's blocking stub resolver."""

    def __init__(self, nameservers: Sequence[str], timeout: float, resolv_conf: str) -> None:
        resolver = stub_resolver(dns.resolver.Resolver, nameservers, timeout, resolv_conf)
        self.timeout = timeout
        self._resolver = resolver

    def lookup(self, name: str, qtype: str, timeout: float) -> list[_Record]:
        """pyspf's DNSLookup contract: [((name, qtype), value)], [] for NXDOMAIN or no data;
        a temporary failure raises spf.TempError."""
        lifetime = max(0.01, min(timeout, self.timeout))
        what = f"{qtype} {name}"
        try:
            qname = dns.name.from_text(name, origin=dns.name.root)
            answer = self._resolver.resolve(qname, dns.rdatatype.from_text(qtype), search=False,
                                            lifetime=lifetime, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.name.EmptyLabel,
                dns.name.LabelTooLong, dns.name.NameTooLong):
            return []  # no such name (or not a possible one): an answer, not an error
        except dns.exception.Timeout:
            raise spf.TempError(f"DNS {what}: no answer within {lifetime:g} s") from None
        except dns.resolver.NoNameservers as exc:
            if _cname_loop(exc):
                # A CNAME loop never resolves: a permanent "no such data", and RFC 7208 §5.5
                # says to skip such a name in "ptr" rather than fail the whole check.
                return []
            raise spf.TempError(f"DNS {what}: no server could answer (SERVFAIL or refused)") from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise spf.TempError(f"DNS {what}: {exc.__class__.__name__}: {exc}") from None
        # CNAMEs were followed by dnspython; the records are filed under the name asked.
        key = (name, qtype)
        records: list[_Record] = []
        for rdata in answer.rrset or ():
            if qtype in ("A", "AAAA"):
                records.append((key, rdata.address))
            elif qtype == "MX":
                records.append((key, (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))))
            elif qtype == "PTR":
                records.append((key, rdata.target.to_text(omit_final_dot=True)))
            elif qtype in ("TXT", "SPF"):
                records.append((key, list(rdata.strings)))
        return records


def _cname_loop(exc: dns.resolver.NoNameservers) -> bool:
    errors = exc.kwargs.get("errors") or []
    return bool(errors) and all(isinstance(entry[3], dns.message.ChainTooLong) for entry in errors)


def _dns_lookup(name: str, qtype: str, strict: object = True, timeout: float = 20.0) -> list[_Record]:
    """Replaces `spf.DNSLookup`: asks the resolver of the checker running in this thread."""
    resolver = _current.resolver
    if resolver is None:  # pyspf called outside SPFChecker: refuse rather than use system DNS
        raise spf.TempError("DNS: no resolver configured (use mailrelay.mailauth.spf.SPFChecker)")
    return resolver.lookup(name, qtype, timeout)


spf.DNSLookup = _dns_lookup
