"""SPF (RFC 7208): may the client's IP address send mail for the MAIL FROM (or HELO) domain?

`SPFChecker.check(ip, mail_from, helo)` returns an `SPFResult` and never raises. The evaluation
is pyspf's (the RFC 7208 reference implementation), run in a small thread pool because it is
synchronous. Its DNS questions go to the `BlockingResolver` the checker was given, through a
subclass of pyspf's query: pyspf's module-wide `spf.DNSLookup` is never used nor replaced, so
several checkers (tests, config reloads) coexist in one process, each with its own resolver.

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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

import spf

from mailrelay.core.address import domain_of
from mailrelay.core.domains import bare_domain
from mailrelay.resolver.base import BlockingResolver, DNSTemporaryError, Record

Result: TypeAlias = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
Scope: TypeAlias = Literal["mailfrom", "helo"]

RESULTS: frozenset[str] = frozenset(
    ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"))

# RFC 7208 §4.6.4: "at least 20 seconds" is suggested for the whole evaluation.
DEFAULT_CHECK_TIMEOUT = 20.0


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
    """Evaluates SPF asking `resolver` (e.g. `resolver.dnspython.BlockingDNSResolver`).

    `resolver.timeout` bounds one DNS question, `check_timeout` the whole check; at most
    `max_workers` checks run at once (the rest wait, within their own `check_timeout`).
    """

    def __init__(self, resolver: BlockingResolver, *, check_timeout: float = DEFAULT_CHECK_TIMEOUT,
                 max_workers: int = 4) -> None:
        if check_timeout <= 0:
            raise ValueError(f"check_timeout must be above 0, got {check_timeout!r}")
        self._dns = resolver
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
        domain = bare_domain(domain_of(mail_from) if mail_from else helo)
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
        try:
            query = _Query(self._dns, i=ip, s=mail_from, h=helo, timeout=self._dns.timeout,
                           querytime=self._check_timeout)
            query.set_default_explanation("")  # so `explanation` is only ever the domain's text
            result, _code, text = query.check()
        except Exception as exc:  # pyspf bug or an unforeseen DNS error: never a crash, never a pass
            return "temperror", f"SPF evaluation failed: {exc.__class__.__name__}: {exc}", ""
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


class _Query(spf.query):  # type: ignore[misc]  # pyspf has no type hints
    """pyspf's query, asking `resolver` instead of pyspf's module-wide `spf.DNSLookup`.

    pyspf 2.0.14 (pinned) asks DNS only through `query.dns` (dns_txt, dns_mx, dns_a and dns_ptr
    call it) and offers no other per-query hook, so this overrides that method: it is pyspf's
    with the lookup swapped, its cache, time budget and void-lookup limit (RFC 7208 §4.6.4)
    kept. pyspf's CNAME chase is left out: the resolver follows CNAMEs itself and answers for
    the name asked, so no CNAME record ever reaches pyspf.
    """

    # pyspf's attributes that dns() reads and writes
    cache: dict[tuple[str, str], list[Record]]
    timeout: float
    querytime: float
    void_lookups: int

    def __init__(self, resolver: BlockingResolver, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolver = resolver

    def dns(self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False) -> list[Record]:
        if not name:
            raise Exception("Invalid query")  # as pyspf's own: ends as a temperror in _evaluate
        name = str(name).removesuffix(".")
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a possible DNS name
        name = name.lower()
        key = (name, qtype)
        result: list[Record] = self.cache.get(key, [])
        if result:
            return result
        if self.querytime < 0:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        timeout = self.querytime if 0 < self.querytime < self.timeout else self.timeout
        started = time.time()
        try:
            records = self.resolver.query(name, qtype, timeout)
        except DNSTemporaryError as exc:
            raise spf.TempError(str(exc)) from None
        if records:
            self.cache.setdefault(key, []).extend(records)
        result = self.cache.get(key, [])
        if self.querytime > 0:
            self.querytime = self.querytime - (time.time() - started)
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result
