"""The DNS records a sender domain publishes (DKIM keys, SPF, DMARC, MX), and checking them.

`dns_records` says what to publish for a `Domain`; `check_records` asks DNS whether each is
there. DNS timeouts become a check with status "error", never an exception.

Security: what DNS holds is untrusted; it is compared, and shown to the operator, not acted on.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mailrelay.accounts.domains import Domain
from mailrelay.core.domains import bare_domain
from mailrelay.resolver.base import DNSTemporaryError, Resolver

CheckStatus = Literal["ok", "missing", "different", "error"]


@dataclass(frozen=True, slots=True)
class DNSRecord:
    purpose: str  # "dkim", "spf", "dmarc", "mx"
    type: str  # "TXT", "MX"
    name: str  # no trailing dot
    value: str
    next_key: bool = False  # the next key of a DKIM rotation: publish now, signs once finished


@dataclass(frozen=True, slots=True)
class RecordCheck:
    record: DNSRecord
    status: CheckStatus
    found: tuple[str, ...] = ()  # what DNS holds at that name (TXT values, MX hosts)
    note: str = ""


def dns_records(domain: Domain, *, hostname: str, source_address: str = "") -> list[DNSRecord]:
    """What to publish for `domain`: DKIM keys, SPF, DMARC, and MX (for replies and bounces)."""
    host = bare_domain(hostname)
    records = [DNSRecord("dkim", "TXT", f"{k.selector}._domainkey.{domain.name}", k.record)
               for k in domain.dkim]
    records += next_key_records(domain)
    records.append(DNSRecord("spf", "TXT", domain.name,
                             " ".join(["v=spf1", *_spf_mechanisms(host, source_address), "~all"])))
    # p=none: collect reports before enforcing (RFC 7489 §6.7's advice for a new sender).
    records.append(DNSRecord("dmarc", "TXT", f"_dmarc.{domain.name}",
                             f"v=DMARC1; p=none; rua=mailto:postmaster@{domain.name}"))
    records.append(DNSRecord("mx", "MX", domain.name, f"10 {host}."))
    return records


def next_key_records(domain: Domain) -> list[DNSRecord]:
    """The DKIM records of the domain's next key (none unless a rotation is under way): what a
    rotation's finish checks."""
    return [DNSRecord("dkim", "TXT", f"{k.selector}._domainkey.{domain.name}", k.record, next_key=True)
            for k in domain.next_dkim]


def _spf_mechanisms(host: str, source_address: str) -> list[str]:
    mechanisms = [f"a:{host}"]
    try:
        ip = ipaddress.ip_address(source_address) if source_address else None
    except ValueError:
        ip = None
    if ip is not None and not ip.is_unspecified:
        mechanisms.append(f"ip{ip.version}:{ip}")
    return mechanisms


async def check_records(domain: Domain, records: Iterable[DNSRecord], resolver: Resolver,
                        ) -> list[RecordCheck]:
    """Look each record up and say whether DNS holds it ("ok"), something else, or nothing."""
    checks = []
    for record in records:
        try:
            checks.append(await _check(record, resolver))
        except DNSTemporaryError as exc:
            checks.append(RecordCheck(record, "error", note=str(exc)))
    return checks


async def check_bounded(domain: Domain, records: Iterable[DNSRecord], resolver: Resolver, *,
                        bound: float) -> list[RecordCheck]:
    """check_records for every record at once, each given at most `bound` seconds (past it, an
    "error" check): the one check behind the API's validate, the CLI and the dashboard."""

    async def one(record: DNSRecord) -> RecordCheck:
        try:
            [check] = await asyncio.wait_for(check_records(domain, [record], resolver), bound)
        except TimeoutError:
            return RecordCheck(record, "error", note=f"no answer within {bound:g} s")
        return check

    return list(await asyncio.gather(*(one(r) for r in records)))


async def _check(record: DNSRecord, resolver: Resolver) -> RecordCheck:
    if record.type == "MX":
        answer = await resolver.mx(record.name)
        hosts = tuple(host for _, host in answer.hosts)
        want = bare_domain(record.value.split()[-1])
        if answer.kind == "mx" and want in hosts:
            return RecordCheck(record, "ok", hosts)
        if answer.kind in ("mx", "null"):
            return RecordCheck(record, "different", hosts or (".",),
                               "null MX: the domain accepts no mail" if answer.kind == "null" else "")
        return RecordCheck(record, "missing")
    found = tuple(await resolver.txt(record.name))
    if record.purpose == "dkim":
        want_key = _tags(record.value).get("p")
        keys = [t for t in found if "p" in _tags(t)]
        if any(_tags(t)["p"] == want_key for t in keys):
            return RecordCheck(record, "ok", found)
        return RecordCheck(record, "different" if keys else "missing", found)
    if record.purpose == "spf":
        spf = [t for t in found if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if not spf:
            return RecordCheck(record, "missing", found)
        if len(spf) > 1:
            # RFC 7208 §4.5: more than one SPF record is a permanent error.
            return RecordCheck(record, "different", tuple(spf), "more than one SPF record")
        mechanisms = {m.lstrip("+").lower() for m in spf[0].split()[1:]}
        wanted = record.value.split()[1:-1]
        if any(m in mechanisms for m in wanted):
            return RecordCheck(record, "ok", tuple(spf))
        return RecordCheck(record, "different", tuple(spf), f"does not authorize {wanted[0]}")
    if record.purpose == "dmarc":
        dmarc = tuple(t for t in found if _tags(t).get("v", "").upper() == "DMARC1")
        if dmarc:
            return RecordCheck(record, "ok", dmarc)
        return RecordCheck(record, "missing", found)
    raise AssertionError(f"unknown record purpose {record.purpose!r}")  # pragma: no cover


def _tags(text: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 §3.2), whitespace inside values removed; {} if not one."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        tag, sep, value = part.partition("=")
        if sep:
            tags.setdefault(tag.strip(), "".join(value.split()))
    return tags
