"""The account's sender domains: list and add them; one domain's DNS records and their check.

The same services as the API's /v3/whitelabel/domains and `mailrelay domain`: DomainService.add
(a new DKIM key, unverified), accounts.dnsrecords for the records to publish and for the check
(every record asked at once, each bounded by `[dns] timeout` plus a second, on the async
resolver: the event loop never waits on DNS); all records in place marks the domain verified,
and a failed check never takes a verification back. Another account's domain, an unknown one
and a malformed name are the same 404. DKIM key rotation is `mailrelay domain rotate`'s: start
(a next key under a new selector, listed among the records to publish), finish (only once the
same bounded check finds the next key's record; no force here, that is the operator's CLI) or
cancel, on DomainService.

Security: what DNS answers is untrusted; it is shown as text (autoescaped), never acted on.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailrelay.accounts.dnsrecords import DNSRecord, RecordCheck, check_bounded, dns_records, next_key_records
from mailrelay.accounts.domains import DEFAULT_SELECTOR, MAX_SELECTOR, Domain, DomainService
from mailrelay.accounts.websessions import WebSession
from mailrelay.core.domains import DomainError
from mailrelay.resolver.dnspython import DNSConfigError, DNSResolver
from mailrelay.settings import Settings
from mailrelay.web.common import (
    NOTICES,
    back,
    not_found,
    posted,
    posted_about,
    run,
    services,
    signed_in,
    signed_in_page,
)

router = APIRouter(include_in_schema=False)

MAX_DOMAIN = 253
MAX_SHOWN = 300  # characters of one value DNS holds, shown back
MAX_FOUND = 5  # values DNS holds at one name, shown back

NOTICES["domain-added"] = ("The domain was added. Publish the records below in its DNS zone, then press "
                           "Verify: until then it is not used for sending.")

NOTICES["rotation-started"] = ("Rotation started: publish the next key's record (marked below), then press "
                               "Finish rotation. Mail is signed with the current key until then.")
NOTICES["rotation-finished"] = "Rotation finished: mail is signed with the new key now."
NOTICES["rotation-cancelled"] = "Rotation cancelled: the next key is deleted; the current key stays."

PURPOSES = {"dkim": "DKIM key", "spf": "SPF", "dmarc": "DMARC", "mx": "MX (replies and bounces)"}


@dataclass(frozen=True, slots=True)
class Row:
    """One record to publish, and what the last check found for it (None: not checked)."""

    what: str
    record: DNSRecord
    check: RecordCheck | None = None

    @property
    def found(self) -> list[str]:
        if self.check is None:
            return []
        return [v if len(v) <= MAX_SHOWN else v[:MAX_SHOWN] + "…" for v in self.check.found[:MAX_FOUND]]


def _records(settings: Settings, domain: Domain) -> list[DNSRecord]:
    return dns_records(domain, hostname=settings.server.hostname, source_address=settings.delivery.source_address)


def _rows(settings: Settings, domain: Domain, checks: list[RecordCheck] | None = None) -> list[Row]:
    records = _records(settings, domain)
    kinds = {f"{k.selector}._domainkey.{domain.name}": k.kind for k in (*domain.dkim, *domain.next_dkim)}

    def what(r: DNSRecord) -> str:
        text = f"{PURPOSES[r.purpose]} ({kinds[r.name]})" if r.name in kinds else PURPOSES[r.purpose]
        return text + ", publish now (next key)" if r.next_key else text

    if checks is None:
        return [Row(what(r), r) for r in records]
    return [Row(what(r), r, c) for r, c in zip(records, checks, strict=True)]


# -- the list --------------------------------------------------------------------------------


async def _list_page(request: Request, session: WebSession, status: int = 200, error: str = "",
                     given: dict[str, str] | None = None) -> HTMLResponse:
    found = await run(request, DomainService(services(request).engine).account_domains, session.account_id)
    return signed_in_page(request, session, "domains.html", status, title="Domains", domains=found, error=error,
                          given=given or {"domain": "", "selector": ""}, default_selector=DEFAULT_SELECTOR,
                          max_domain=MAX_DOMAIN, max_selector=MAX_SELECTOR)


@router.get("/domains")
async def domains_page(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    return await _list_page(request, session)


@router.post("/domains")
async def add_domain(request: Request) -> Response:
    """Add a domain as the API's POST /v3/whitelabel/domains does (a new RSA key, unverified)."""
    answer = await posted(request)
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    given = {"domain": fields.get("domain", "").strip()[:MAX_DOMAIN + 1],
             "selector": fields.get("selector", "").strip()[:MAX_SELECTOR + 1]}
    if len(given["domain"]) > MAX_DOMAIN:
        return await _list_page(request, session, 400, f"The domain name is too long: at most {MAX_DOMAIN} "
                                                        "characters.", given)
    svc = DomainService(services(request).engine)
    try:
        added = await run(request, lambda: svc.add(given["domain"], session.account,
                                                   selector=given["selector"] or DEFAULT_SELECTOR))
    except DomainError as exc:
        return await _list_page(request, session, 400, str(exc), given)
    return back(f"/domains/{added.name}", "domain-added")


# -- one domain ------------------------------------------------------------------------------


async def _own(request: Request, session: WebSession, name: str) -> Domain | None:
    """The account's domain `name`, or None (unknown, malformed, or another account's)."""
    if len(name) > MAX_DOMAIN + 1:
        return None
    found = await run(request, DomainService(services(request).engine).get, name)
    return found if found is not None and found.account_name == session.account else None


def _domain_page(request: Request, session: WebSession, domain: Domain, rows: list[Row], *,
                 checked: bool = False, error: str = "", status: int = 200, selector: str = "",
                 rotation_rows: list[Row] | None = None) -> HTMLResponse:
    return signed_in_page(request, session, "domain.html", status, title=f"Domain {domain.name}", domain=domain,
                          rows=rows, checked=checked, error=error, selector=selector, max_selector=MAX_SELECTOR,
                          rotation_rows=rotation_rows or [],
                          all_ok=checked and all(r.check is not None and r.check.status == "ok" for r in rows))


@router.get("/domains/{name}")
async def domain_page(request: Request, name: str) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    domain = await _own(request, session, name)
    if domain is None:
        return not_found(request, session, "domain")
    return _domain_page(request, session, domain, _rows(services(request).settings, domain))


@router.post("/domains/{name}/verify")
async def verify_domain(request: Request, name: str) -> Response:
    """The API's validate: ask DNS for every record; all in place marks the domain verified."""
    answer = await posted_about(request, lambda session: _own(request, session, name), "domain")
    if isinstance(answer, Response):
        return answer
    session, _, domain = answer
    svc = services(request)
    settings = svc.settings
    records = _records(settings, domain)
    try:
        # Built on the executor: with no nameservers configured it reads /etc/resolv.conf.
        resolver = await run(request, DNSResolver, settings.dns.nameservers, settings.dns.timeout)
    except DNSConfigError as exc:
        return _domain_page(request, session, domain, _rows(settings, domain),
                            error=f"DNS lookups are not available on this server: {exc}")
    checks = await check_bounded(domain, records, resolver, bound=settings.dns.timeout + 1.0)
    if all(c.status == "ok" for c in checks):
        try:
            domain = await run(request, DomainService(svc.engine).mark_verified, domain.name)
        except DomainError:  # removed meanwhile
            return not_found(request, session, "domain")
    return _domain_page(request, session, domain, _rows(settings, domain, checks), checked=True)


# -- key rotation ----------------------------------------------------------------------------


@router.post("/domains/{name}/rotate")
async def start_rotation(request: Request, name: str) -> Response:
    """A next key under the selector given (or mrYYYYMM), published before it signs."""
    answer = await posted_about(request, lambda session: _own(request, session, name), "domain")
    if isinstance(answer, Response):
        return answer
    session, fields, domain = answer
    svc = services(request)
    selector = fields.get("selector", "").strip()[:MAX_SELECTOR + 1]
    try:
        await run(request, DomainService(svc.engine).start_rotation, domain.name, selector or None)
    except DomainError as exc:
        return _domain_page(request, session, domain, _rows(svc.settings, domain), error=str(exc), status=400,
                            selector=selector)
    return back(f"/domains/{domain.name}", "rotation-started")


@router.post("/domains/{name}/rotate/finish")
async def finish_rotation(request: Request, name: str) -> Response:
    """Sign with the next key, only once DNS has its record (asked now, bounded as Verify)."""
    answer = await posted_about(request, lambda session: _own(request, session, name), "domain")
    if isinstance(answer, Response):
        return answer
    session, _, domain = answer
    svc = services(request)
    settings = svc.settings
    if domain.next_selector is None:
        return _domain_page(request, session, domain, _rows(settings, domain), status=400,
                            error="This domain is not rotating its key (finished or cancelled meanwhile?).")
    try:
        resolver = await run(request, DNSResolver, settings.dns.nameservers, settings.dns.timeout)
    except DNSConfigError as exc:
        return _domain_page(request, session, domain, _rows(settings, domain),
                            error=f"DNS lookups are not available on this server: {exc}")
    records = next_key_records(domain)
    checks = await check_bounded(domain, records, resolver, bound=settings.dns.timeout + 1.0)
    if not all(c.status == "ok" for c in checks):
        rows = [Row(f"{PURPOSES['dkim']} ({k.kind}), next key", r, c)
                for k, r, c in zip(domain.next_dkim, records, checks, strict=True)]
        return _domain_page(request, session, domain, _rows(settings, domain), rotation_rows=rows,
                            error="The next key's record is not in DNS yet (see below): mail is still signed "
                                  f"with selector {domain.selector}. Publish it, then finish again (DNS changes "
                                  "can take a while to be seen).")
    try:
        await run(request, DomainService(svc.engine).finish_rotation, domain.name, domain.next_selector)
    except DomainError as exc:
        return _domain_page(request, session, domain, _rows(settings, domain), error=str(exc), status=409)
    return back(f"/domains/{domain.name}", "rotation-finished")


@router.post("/domains/{name}/rotate/cancel")
async def cancel_rotation(request: Request, name: str) -> Response:
    answer = await posted_about(request, lambda session: _own(request, session, name), "domain")
    if isinstance(answer, Response):
        return answer
    session, _, domain = answer
    svc = services(request)
    try:
        await run(request, DomainService(svc.engine).cancel_rotation, domain.name)
    except DomainError as exc:
        return _domain_page(request, session, domain, _rows(svc.settings, domain), error=str(exc), status=400)
    return back(f"/domains/{domain.name}", "rotation-cancelled")
