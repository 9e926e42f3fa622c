"""DMARC for inbound mail (RFC 7489): policy discovery, identifier alignment, the result.

`check_message` reads the RFC5322.From domain and calls `check_dmarc`, which looks up
`_dmarc.<from-domain>`, falling back to `_dmarc.<organizational domain>` (§6.6.3), and passes when
an SPF pass or a DKIM pass is aligned with the From domain (§3.1). `dmarc_action` turns a result
into what an inbound policy does with it under `monitor` or `enforce`, sampled by pct= (§6.6.4).

Results (RFC 8601 §2.7.2 values): pass, fail, none (no record), temperror (DNS failed: never a
silent pass), permerror (several records, a broken record, or a From we cannot read).

Organizational domains come from the Public Suffix List bundled with `publicsuffixlist` (no
network); names not in the list count as one-label suffixes, so `sub.example.test` belongs to
`example.test`.

Security: records and From fields are untrusted; comments are fixed phrases plus domain names.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mailrelay.core.domains import lenient_domain
from mailrelay.core.headers import header_section
from mailrelay.core.reply import Reply
from mailrelay.mailauth.dkimverify import DKIMResult
from mailrelay.resolver.base import DNSTemporaryError, TXTResolver

DMARCStatus = Literal["pass", "fail", "none", "temperror", "permerror"]
Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]
Enforcement = Literal["monitor", "enforce"]
Action = Literal["accept", "quarantine", "reject"]

# RFC 7489 §10.3 suggests 5xx with text naming the policy; 5.7.1 is "delivery not authorized".
DMARC_REJECT = Reply(550, "5.7.1", "Message rejected by the sender domain's DMARC policy")

# A From field with one mailbox is far shorter; longer ones are not parsed (permerror).
MAX_FROM = 8192
_POLICIES: tuple[Policy, ...] = ("none", "quarantine", "reject")
# RFC 7489 §6.4: the record starts with v=DMARC1 (upper case, WSP allowed around "=").
_VERSION = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,;!]+(?:![0-9]+[kmgt]?)?\Z")
_FROM = re.compile(rb"(?im)^from[ \t]*:(.*(?:\r?\n[ \t].*)*)")


class DMARCRecordError(ValueError):
    """A `v=DMARC1` record that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    """A parsed DMARC record (RFC 7489 §6.3); unknown tags are ignored."""

    p: Policy
    sp: Policy | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DMARCResult:
    """The DMARC outcome for one message.

    `policy` is the published policy for the From domain (p=, or sp= when the record was found
    at the organizational domain of a subdomain); act on it only when `result == "fail"`.
    `domain` is where the record was found.
    """

    result: DMARCStatus
    policy: Policy | None
    domain: str
    from_domain: str
    comment: str = ""
    record: DMARCRecord | None = None
    spf_aligned: bool = False
    dkim_aligned: bool = False


@dataclass(frozen=True, slots=True)
class FromDomain:
    """The RFC5322.From domain, or why DMARC cannot use the From field (`domain` is None)."""

    domain: str | None
    problem: str = ""


# -- the From domain ---------------------------------------------------------------------------


def from_domain(message: bytes) -> FromDomain:
    """The domain of the single From address; RFC 7489 §6.6.1 needs exactly one From field with
    exactly one mailbox to evaluate."""
    fields = _FROM.findall(header_section(message))
    if not fields:
        return FromDomain(None, "no From field")
    if len(fields) > 1:
        return FromDomain(None, "several From fields")
    if len(fields[0]) > MAX_FROM:
        # This runs on the event loop: the stdlib address parser takes seconds on megabytes.
        return FromDomain(None, "From field too long")
    value = re.sub(rb"\r?\n", b"", fields[0]).decode("utf-8", "replace")
    try:
        addresses = [addr for _, addr in email.utils.getaddresses([value]) if addr]
    except RecursionError:  # the parser recurses into nested comments: "((((..."
        return FromDomain(None, "unreadable From field")
    if len(addresses) != 1:
        return FromDomain(None, "no address in From" if not addresses else "several addresses in From")
    local, at, domain = addresses[0].rpartition("@")
    domain = lenient_domain(domain)
    if not at or not local or not domain or "." not in domain:
        return FromDomain(None, "no domain in the From address")
    return FromDomain(domain)


# -- alignment ---------------------------------------------------------------------------------


@functools.cache
def _psl() -> PublicSuffixList:
    # Read-only data parsed once (~100 ms) and shared: not per-server state.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a public suffix itself stays as it is."""
    domain = lenient_domain(domain)
    org: str | None = _psl().privatesuffix(domain)
    return org or domain


def aligned(identifier: str, from_dom: str, mode: Alignment) -> bool:
    """RFC 7489 §3.1: strict is an exact match, relaxed the same organizational domain."""
    a, b = lenient_domain(identifier), lenient_domain(from_dom)
    if not a or not b:
        return False
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


# -- records -----------------------------------------------------------------------------------


def is_dmarc_record(text: str) -> bool:
    return _VERSION.match(text) is not None


def parse_record(text: str) -> DMARCRecord:
    """Parse a record that starts with v=DMARC1, or raise DMARCRecordError."""
    if not is_dmarc_record(text):
        raise DMARCRecordError("does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name and not value.strip():
            continue  # an empty element, as after a trailing ";"
        if not eq or not name:
            raise DMARCRecordError(f"malformed tag {part.strip()[:40]!r}")
        tags.setdefault(name, value.strip())
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    try:
        p = _policy(tags.get("p"), "p")
        sp = _policy(tags["sp"], "sp") if "sp" in tags else None
    except DMARCRecordError:
        # RFC 7489 §6.6.3 step 6: a bad p= or sp= with a valid rua= counts as p=none.
        if not any(_URI.match(u) for u in rua):
            raise
        p, sp = "none", None
    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise DMARCRecordError(f"pct={pct_text[:10]!r} is not 0-100")
    return DMARCRecord(p, sp, _alignment(tags.get("adkim", "r"), "adkim"),
                       _alignment(tags.get("aspf", "r"), "aspf"), int(pct_text), rua)


def _policy(value: str | None, tag: str) -> Policy:
    for policy in _POLICIES:
        if value is not None and value.lower() == policy:
            return policy
    if value is None:
        raise DMARCRecordError(f"missing {tag}=")
    raise DMARCRecordError(f"{tag}={value[:20]!r} is not none/quarantine/reject")


def _alignment(value: str, tag: str) -> Alignment:
    if value.lower() == "s":
        return "s"
    if value.lower() == "r":
        return "r"
    raise DMARCRecordError(f"{tag}={value[:10]!r} is not r or s")


# -- the check ---------------------------------------------------------------------------------


async def check_message(message: bytes, spf: tuple[str, str] | None, dkim: Sequence[DKIMResult], *,
                        resolver: TXTResolver) -> DMARCResult:
    """DMARC for `message`: its From domain, then `check_dmarc`."""
    found = from_domain(message)
    if found.domain is None:
        return DMARCResult("permerror", None, "", "", found.problem)
    return await check_dmarc(found.domain, spf, dkim, resolver=resolver)


async def check_dmarc(from_dom: str, spf: tuple[str, str] | None, dkim: Sequence[DKIMResult], *,
                      resolver: TXTResolver) -> DMARCResult:
    """DMARC for a message whose From domain is `from_dom`.

    `spf` is (SPF result, the MAIL FROM domain it was checked for), or None if SPF was not
    checked; `dkim` the verification results. Never raises.
    """
    from_dom = lenient_domain(from_dom)
    org = organizational_domain(from_dom)
    try:
        at, texts = from_dom, await _records(resolver, from_dom)
        if not texts and org != from_dom:
            at, texts = org, await _records(resolver, org)  # RFC 7489 §6.6.3 step 3
    except DNSTemporaryError:
        return DMARCResult("temperror", None, "", from_dom, "DNS lookup of the DMARC record failed")
    if not texts:
        return DMARCResult("none", None, "", from_dom, "no DMARC record")
    if len(texts) > 1:
        return DMARCResult("permerror", None, at, from_dom, f"several DMARC records at _dmarc.{at}")
    try:
        record = parse_record(texts[0])
    except DMARCRecordError as exc:
        return DMARCResult("permerror", None, at, from_dom, f"invalid DMARC record at _dmarc.{at}: {exc}")
    # RFC 7489 §6.3: sp= applies to subdomains of the domain whose record was found.
    policy = record.sp if at != from_dom and record.sp is not None else record.p
    spf_ok = spf is not None and spf[0].lower() == "pass" and aligned(spf[1], from_dom, record.aspf)
    dkim_ok = any(r.passed and aligned(r.domain, from_dom, record.adkim) for r in dkim)
    if spf_ok or dkim_ok:
        return DMARCResult("pass", policy, at, from_dom, "", record, spf_ok, dkim_ok)
    return DMARCResult("fail", policy, at, from_dom, "no aligned SPF or DKIM pass", record)


async def _records(resolver: TXTResolver, domain: str) -> list[str]:
    """The DMARC records at `_dmarc.<domain>`; other TXT records there are discarded (§6.6.3)."""
    return [t for t in await resolver.txt(f"_dmarc.{domain}") if is_dmarc_record(t)]


def dmarc_action(result: DMARCResult, mode: Enforcement, *, sample: float) -> Action:
    """What to do with the message: `monitor` only records; `enforce` applies p= on fail
    (reject → refuse with DMARC_REJECT, quarantine → accept and mark), sampled by pct=.

    `sample` is a uniform random draw in [0, 1), given by the caller (tests pass fixed ones).
    RFC 7489 §6.6.4: the policy applies to pct percent of failing messages; one not selected
    gets the next lower policy (reject → quarantine, quarantine → none)."""
    if mode != "enforce" or result.result != "fail" or result.policy in (None, "none"):
        return "accept"
    pct = result.record.pct if result.record is not None else 100
    selected = sample * 100 < pct
    if result.policy == "reject":
        return "reject" if selected else "quarantine"
    return "quarantine" if selected else "accept"
