"""SendGrid's domain authentication, `/v3/whitelabel/domains`, over mailrelay's sender domains.

A domain created here is the one `mailrelay domain add` makes (new DKIM key, unverified) and
`{id}/validate` is `mailrelay domain verify`: it asks DNS for every record and, when all are in
place, marks the domain verified; only then is it used for sending (require_own_domain, DKIM
signing). A failed validation never takes a verification back.

Differences from SendGrid, on purpose: the records live at the domain itself (DKIM TXT keys,
SPF, DMARC, MX), not CNAMEs to us, so `automatic_security` is always false and `subdomain`
is accepted but not used (""); `custom_dkim_selector` picks our selector; `custom_spf`,
`default`, `ips` and `username` are accepted and ignored. The `dns` entries are named dkim1
(dkim2 with a second key), spf, dmarc and mail_server; each `valid` is the domain's.

Every `{domain_id}` is looked up with the caller's account, so another account's domain is a 404.
DNS is asked in the request's worker thread (never on the event loop), each record bounded
by `[dns] timeout` plus a second.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mailrelay.accounts.dnsrecords import DNSRecord, RecordCheck, check_bounded, dns_records
from mailrelay.accounts.domains import DEFAULT_SELECTOR, Domain, DomainService
from mailrelay.core.domains import DomainError
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem
from mailrelay.http.services import Services
from mailrelay.resolver.dnspython import DNSConfigError, DNSResolver

router = APIRouter(tags=["Domain Authentication"])

PATH = "/v3/whitelabel/domains"
MAX_SHOWN = 300  # characters of one DNS value quoted back in a validation reason
_COMMON: dict[int | str, dict[str, str]] = {
    400: {"description": "invalid request"}, 401: {"description": "bad key"},
    403: {"description": "the key lacks the scope"}, 429: {"description": "too many failed keys"}}
_FOUND: dict[int | str, dict[str, str]] = {**_COMMON, 404: {"description": "no such domain of the account"}}
DomainId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # the column's range on every database


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields ignored, as SendGrid does


class CreateDomain(_Body):
    domain: str = Field(min_length=1, max_length=253)
    subdomain: str | None = Field(default=None, max_length=63)
    automatic_security: bool | None = None
    custom_spf: bool | None = None
    default: bool | None = None
    custom_dkim_selector: str | None = Field(default=None, max_length=63)


class DNSEntry(BaseModel):
    valid: bool
    type: str  # "txt", "mx", as SendGrid spells them
    host: str
    data: str


class AuthenticatedDomain(BaseModel):
    id: int
    user_id: int
    subdomain: str
    domain: str
    username: str
    ips: list[str]
    custom_spf: bool
    default: bool
    legacy: bool
    automatic_security: bool
    valid: bool
    dns: dict[str, DNSEntry]


class RecordResult(BaseModel):
    valid: bool
    reason: str | None


class Validation(BaseModel):
    id: int
    valid: bool
    validation_results: dict[str, RecordResult]


# -- shapes ----------------------------------------------------------------------------------


def _names(records: list[DNSRecord]) -> list[str]:
    """SendGrid-style keys of `records`: dkim1, dkim2, spf, dmarc, mail_server."""
    out, dkim = [], 0
    for r in records:
        if r.purpose == "dkim":
            dkim += 1
            out.append(f"dkim{dkim}")
        else:
            out.append("mail_server" if r.purpose == "mx" else r.purpose)
    return out


def _records(settings_svc: Services, domain: Domain) -> list[DNSRecord]:
    s = settings_svc.settings
    return dns_records(domain, hostname=s.server.hostname, source_address=s.delivery.source_address)


def _shape(svc: Services, who: Caller, domain: Domain) -> AuthenticatedDomain:
    records = _records(svc, domain)
    dns = {name: DNSEntry(valid=domain.verified, type=r.type.lower(), host=r.name, data=r.value)
           for name, r in zip(_names(records), records, strict=True)}
    return AuthenticatedDomain(id=domain.id, user_id=who.account.id, subdomain="", domain=domain.name,
                               username=who.account.name, ips=[], custom_spf=False, default=False,
                               legacy=False, automatic_security=False, valid=domain.verified, dns=dns)


def _reason(check: RecordCheck) -> str | None:
    if check.status == "ok":
        return None
    r = check.record
    if check.status == "error":
        return f"DNS lookup of {r.name} failed: {check.note or 'no answer'}; try again later"
    found = ", ".join(repr(v[:MAX_SHOWN]) for v in check.found[:5])
    wanted = f"Expected a {r.type} record at {r.name} with {r.value[:MAX_SHOWN]!r}"
    if check.status == "missing":
        return wanted + (f" but found only {found}." if found else " but found none.")
    return wanted + f" but found {found}" + (f" ({check.note})." if check.note else ".")


# -- DNS -------------------------------------------------------------------------------------


def _check_now(svc: Services, domain: Domain, records: list[DNSRecord]) -> list[RecordCheck]:
    """Every record checked at once, in this (worker) thread's own event loop, each bounded."""
    s = svc.settings
    try:
        resolver = DNSResolver(s.dns.nameservers, s.dns.timeout)
    except DNSConfigError as exc:
        raise APIError(503, [Problem("DNS lookups are not available on this server", None, str(exc))]) from None
    return asyncio.run(check_bounded(domain, records, resolver, bound=s.dns.timeout + 1.0))


# -- routes ----------------------------------------------------------------------------------


def _domains(svc: Services) -> DomainService:
    return DomainService(svc.engine)


def _own(svc: Services, who: Caller, domain_id: int) -> Domain:
    found = _domains(svc).account_domains(who.account.id, domain_id)
    if not found:
        raise APIError(404, "not found")
    return found[0]


@router.post(PATH, status_code=201, response_model=AuthenticatedDomain,
             summary="Authenticate a domain (add it, with a new DKIM key; unverified until validated)",
             responses={**_COMMON, 400: {"description": "invalid, taken, or overlapping another account's domain"}})
def create_domain(request: Request, body: CreateDomain,
                  who: Annotated[Caller, Depends(needs("whitelabel.create"))]) -> AuthenticatedDomain:
    svc = services(request)
    try:
        domain = _domains(svc).add(body.domain, who.account.name,
                                   selector=body.custom_dkim_selector or DEFAULT_SELECTOR)
    except DomainError as exc:
        field = "custom_dkim_selector" if "selector" in str(exc) else "domain"
        raise APIError(400, [Problem(str(exc), field)]) from None
    return _shape(svc, who, domain)


@router.get(PATH, response_model=list[AuthenticatedDomain], summary="List authenticated domains",
            responses=_COMMON)
def list_domains(request: Request, who: Annotated[Caller, Depends(needs("whitelabel.read"))],
                 limit: Annotated[int | None, Query(ge=0, le=10_000)] = None,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                 domain: Annotated[str | None, Query(max_length=253)] = None) -> list[AuthenticatedDomain]:
    svc = services(request)
    found = _domains(svc).account_domains(who.account.id)
    if domain:
        found = [d for d in found if d.name == domain.strip().lower().rstrip(".")]
    found = found[offset:] if limit is None else found[offset:offset + limit]
    return [_shape(svc, who, d) for d in found]


@router.get(PATH + "/{domain_id}", response_model=AuthenticatedDomain,
            summary="Retrieve an authenticated domain", responses=_FOUND)
def get_domain(request: Request, domain_id: DomainId,
               who: Annotated[Caller, Depends(needs("whitelabel.read"))]) -> AuthenticatedDomain:
    svc = services(request)
    return _shape(svc, who, _own(svc, who, domain_id))


@router.delete(PATH + "/{domain_id}", status_code=204, response_class=Response,
               summary="Delete an authenticated domain (and its DKIM keys)",
               responses=_FOUND)
def delete_domain(request: Request, domain_id: DomainId,
                  who: Annotated[Caller, Depends(needs("whitelabel.delete"))]) -> Response:
    svc = services(request)
    found = _own(svc, who, domain_id)
    try:
        _domains(svc).remove(found.name)
    except DomainError:  # removed by someone else meanwhile
        raise APIError(404, "not found") from None
    return Response(status_code=204)


@router.post(PATH + "/{domain_id}/validate", response_model=Validation,
             summary="Validate a domain authentication (checks DNS; all records in place: verified)",
             responses={**_FOUND, 503: {"description": "no DNS resolver"}})
def validate_domain(request: Request, domain_id: DomainId,
                    who: Annotated[Caller, Depends(needs("whitelabel.update"))]) -> Validation:
    svc = services(request)
    domain = _own(svc, who, domain_id)
    records = _records(svc, domain)
    checks = _check_now(svc, domain, records)
    valid = all(c.status == "ok" for c in checks)
    if valid:
        try:
            _domains(svc).mark_verified(domain.name)
        except DomainError:
            raise APIError(404, "not found") from None
    results = {name: RecordResult(valid=c.status == "ok", reason=_reason(c))
               for name, c in zip(_names(records), checks, strict=True)}
    return Validation(id=domain.id, valid=valid, validation_results=results)
