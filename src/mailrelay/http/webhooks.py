"""SendGrid's webhook settings: the event webhook (`/v3/user/webhooks/event/...`) over the
account's webhook columns (events.hooks), and Inbound Parse (`/v3/user/webhooks/parse/...`) over
its inbound domains (accounts.domains).

Every call reads and changes only the caller's own account: the event webhook has no id, and a
parse hostname that is not one of the caller's inbound domains is 404, as a missing one.

Not supported, and refused rather than ignored so nobody relies on it: OAuth on the event
webhook (a non-empty `oauth_client_id` / `oauth_token_url`) and Inbound Parse's `spam_check`.
Events SendGrid posts and we never make (open, click, spam_report, unsubscribe, group_*) can be
switched like the others; they simply never come.

Security: the test POST goes to a URL the caller names, with the same rules as the dispatcher's
posts (events.webhook.sample_post: no redirects, no proxies, the answer's body unread, its
status only), bounded by the webhook timeout; it is logged with the
account's last POSTs (events.postlog).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from mailrelay.accounts.domains import MAX_WEBHOOK_URL, Domain, DomainService
from mailrelay.accounts.service import AccountError
from mailrelay.core.domains import DomainError
from mailrelay.core.status import SENDGRID_EVENTS
from mailrelay.events import postlog, signing
from mailrelay.events.hooks import EventSettings, WebhookService, validate_url
from mailrelay.events.webhook import sample_post
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem

router = APIRouter(tags=["Webhooks"])

MAX_TEST_TIMEOUT = 10.0  # seconds: a test POST holds its request open that long at most

_Responses = dict[int | str, dict[str, Any]]
_AUTH: _Responses = {401: {"description": "bad or revoked key"}, 403: {"description": "the key lacks the scope"}}
_BAD: _Responses = {400: {"description": "invalid body, with the field"}}
_NOT_FOUND: _Responses = {404: {"description": "no such inbound hostname of this account"}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields ignored, as SendGrid does


# -- event webhook ---------------------------------------------------------------------------


class EventSettingsOut(BaseModel):
    enabled: bool
    url: str
    group_resubscribe: bool
    delivered: bool
    group_unsubscribe: bool
    spam_report: bool
    bounce: bool
    deferred: bool
    unsubscribe: bool
    processed: bool
    open: bool
    click: bool
    dropped: bool
    oauth_client_id: str
    oauth_token_url: str


class EventSettingsIn(_Body):
    enabled: StrictBool | None = None
    url: str | None = Field(default=None, max_length=MAX_WEBHOOK_URL)
    group_resubscribe: StrictBool | None = None
    delivered: StrictBool | None = None
    group_unsubscribe: StrictBool | None = None
    spam_report: StrictBool | None = None
    bounce: StrictBool | None = None
    deferred: StrictBool | None = None
    unsubscribe: StrictBool | None = None
    processed: StrictBool | None = None
    open: StrictBool | None = None
    click: StrictBool | None = None
    dropped: StrictBool | None = None
    oauth_client_id: str | None = Field(default=None, max_length=2000)
    oauth_token_url: str | None = Field(default=None, max_length=2000)


class SignedIn(_Body):
    enabled: StrictBool


class SignedOut(BaseModel):
    public_key: str  # base64 DER SubjectPublicKeyInfo, as SendGrid shows it; "" when signing is off


class TestIn(_Body):
    url: str = Field(max_length=MAX_WEBHOOK_URL)
    oauth_client_id: str | None = Field(default=None, max_length=2000)
    oauth_client_secret: str | None = Field(default=None, max_length=2000)
    oauth_token_url: str | None = Field(default=None, max_length=2000)


def _hooks(request: Request) -> WebhookService:
    return WebhookService(services(request).engine)


def _domains(request: Request) -> DomainService:
    return DomainService(services(request).engine)


def _event_settings(found: EventSettings) -> EventSettingsOut:
    switches = {name: name in found.events for name in SENDGRID_EVENTS}
    return EventSettingsOut(enabled=found.enabled and bool(found.url), url=found.url or "",
                            oauth_client_id="", oauth_token_url="", **switches)


def _no_oauth(**fields: str | None) -> None:
    for name, value in fields.items():
        if value:
            raise APIError(400, [Problem("OAuth on the event webhook is not supported by this server", name)])


def _url(request: Request, url: str) -> str:
    """An account's webhook URL, checked as validate_url does, and not internal unless the
    operator allows it ([webhooks] allow_private_targets)."""
    try:
        return validate_url(url, allow_private=services(request).settings.webhooks.allow_private_targets)
    except AccountError as exc:
        raise APIError(400, [Problem(str(exc), "url")]) from None


@router.get("/v3/user/webhooks/event/settings", response_model=EventSettingsOut, responses=_AUTH,
            summary="The event webhook's settings")
def get_event_settings(request: Request,
                       who: Annotated[Caller, Depends(needs("user.webhooks.event.settings.read"))]) -> EventSettingsOut:
    return _event_settings(_hooks(request).settings(who.account.id))


@router.patch("/v3/user/webhooks/event/settings", response_model=EventSettingsOut, responses={**_AUTH, **_BAD},
              summary="Change the event webhook: URL, on/off, which events (fields left out keep their value)")
def patch_event_settings(request: Request, body: EventSettingsIn,
                         who: Annotated[Caller, Depends(needs("user.webhooks.event.settings.update"))],
                         ) -> EventSettingsOut:
    _no_oauth(oauth_client_id=body.oauth_client_id, oauth_token_url=body.oauth_token_url)
    given = body.model_dump(exclude_none=True)
    switches: dict[str, bool] = {name: given[name] for name in SENDGRID_EVENTS if name in given}
    url = _url(request, body.url) if body.url else None
    found = _hooks(request).update(who.account.id, url=url, clear_url=body.url == "", enabled=body.enabled,
                                   events=switches)
    return _event_settings(found)


@router.get("/v3/user/webhooks/event/settings/signed", response_model=SignedOut, responses=_AUTH,
            summary="The public key the event webhook's POSTs are signed with (\"\" when off)")
def get_signed(request: Request,
               who: Annotated[Caller, Depends(needs("user.webhooks.event.settings.read"))]) -> SignedOut:
    key = _hooks(request).settings(who.account.id).signing_key
    return SignedOut(public_key=_public(key))


def _public(key: str | None) -> str:
    return signing.public_key(key) if key else ""


@router.patch("/v3/user/webhooks/event/settings/signed", response_model=SignedOut, responses={**_AUTH, **_BAD},
              summary="Turn SendGrid's signature on the event webhook on (a new key pair) or off")
def patch_signed(request: Request, body: SignedIn,
                 who: Annotated[Caller, Depends(needs("user.webhooks.event.settings.update"))]) -> SignedOut:
    return SignedOut(public_key=_hooks(request).set_signed(who.account.id, body.enabled) or "")


@router.post("/v3/user/webhooks/event/test", status_code=204, response_class=Response,
             responses={**_AUTH, 400: {"description": "invalid URL, or the test POST was not answered 2xx"}},
             summary="POST one sample event to a URL, signed as the account's events are")
async def test_event_webhook(request: Request, body: TestIn,
                             who: Annotated[Caller, Depends(needs("user.webhooks.event.test.create"))]) -> Response:
    _no_oauth(oauth_client_id=body.oauth_client_id, oauth_client_secret=body.oauth_client_secret,
              oauth_token_url=body.oauth_token_url)
    url = _url(request, body.url)
    svc = services(request)
    found = await asyncio.get_running_loop().run_in_executor(svc.executor, _hooks(request).settings, who.account.id)
    done = await sample_post(url, secret=found.secret, signing_key=found.signing_key,
                             timeout=min(svc.settings.webhooks.timeout, MAX_TEST_TIMEOUT),
                             allow_private=svc.settings.webhooks.allow_private_targets)
    await asyncio.get_running_loop().run_in_executor(svc.executor, postlog.record_one, svc.engine,
                                                     who.account.id, done)
    if done.error is not None:
        raise APIError(400, [Problem(f"the test POST failed: {done.error}", "url")])
    return Response(status_code=204)


# -- Inbound Parse -----------------------------------------------------------------------------


class ParseSetting(BaseModel):
    url: str
    hostname: str
    spam_check: bool
    send_raw: bool


class ParseList(BaseModel):
    result: list[ParseSetting]


class ParseChange(_Body):
    url: str | None = Field(default=None, max_length=MAX_WEBHOOK_URL)
    spam_check: StrictBool | None = None
    send_raw: StrictBool | None = None


class ParseCreate(ParseChange):
    hostname: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=MAX_WEBHOOK_URL)


def _parse(domain: Domain) -> ParseSetting:
    return ParseSetting(url=domain.inbound_webhook or "", hostname=domain.name, spam_check=False,
                        send_raw=domain.inbound_raw)


def _own_domain(request: Request, who: Caller, hostname: str, *, inbound: bool) -> Domain:
    """The caller's domain `hostname` (receiving, if `inbound`); 404 for any other."""
    found = _domains(request).get(hostname)
    if found is None or found.account_name != who.account.name or (inbound and not found.inbound):
        raise APIError(404, "not found")
    return found


def _set_parse(request: Request, domain: Domain, body: ParseChange) -> ParseSetting:
    if body.spam_check:
        raise APIError(400, [Problem("spam_check is not supported by this server", "spam_check")])
    if body.url:
        _url(request, body.url)
    try:
        changed = _domains(request).set_inbound(
            domain.name, inbound=True, webhook=body.url or None, clear_webhook=body.url == "", raw=body.send_raw)
    except DomainError as exc:
        raise APIError(400, [Problem(str(exc), "url")]) from None
    return _parse(changed)


@router.get("/v3/user/webhooks/parse/settings", response_model=ParseList, responses=_AUTH,
            summary="Inbound Parse: the account's receiving domains and where their mail is posted")
def list_parse(request: Request,
               who: Annotated[Caller, Depends(needs("user.webhooks.parse.settings.read"))]) -> ParseList:
    found = _domains(request).list(account=who.account.name)
    return ParseList(result=[_parse(d) for d in found if d.inbound])


@router.post("/v3/user/webhooks/parse/settings", status_code=201, response_model=ParseSetting,
             responses={**_AUTH, **_BAD}, summary="Receive mail for one of the account's domains, posted to url")
def create_parse(request: Request, body: ParseCreate,
                 who: Annotated[Caller, Depends(needs("user.webhooks.parse.settings.create"))]) -> ParseSetting:
    try:
        domain = _own_domain(request, who, body.hostname, inbound=False)
    except APIError:
        raise APIError(400, [Problem("not a domain of this account; add it as a sender domain first",
                                     "hostname")]) from None
    return _set_parse(request, domain, body)


@router.get("/v3/user/webhooks/parse/settings/{hostname}", response_model=ParseSetting,
            responses={**_AUTH, **_NOT_FOUND}, summary="Inbound Parse settings of one hostname")
def get_parse(request: Request, hostname: str,
              who: Annotated[Caller, Depends(needs("user.webhooks.parse.settings.read"))]) -> ParseSetting:
    return _parse(_own_domain(request, who, hostname, inbound=True))


@router.patch("/v3/user/webhooks/parse/settings/{hostname}", response_model=ParseSetting,
              responses={**_AUTH, **_BAD, **_NOT_FOUND},
              summary="Change where one hostname's mail is posted (url, send_raw)")
def patch_parse(request: Request, hostname: str, body: ParseChange,
                who: Annotated[Caller, Depends(needs("user.webhooks.parse.settings.update"))]) -> ParseSetting:
    return _set_parse(request, _own_domain(request, who, hostname, inbound=True), body)


@router.delete("/v3/user/webhooks/parse/settings/{hostname}", status_code=204, response_class=Response,
               responses={**_AUTH, **_NOT_FOUND}, summary="Stop receiving mail for one hostname")
def delete_parse(request: Request, hostname: str,
                 who: Annotated[Caller, Depends(needs("user.webhooks.parse.settings.delete"))]) -> Response:
    domain = _own_domain(request, who, hostname, inbound=True)
    _domains(request).set_inbound(domain.name, inbound=False, clear_webhook=True)
    return Response(status_code=204)
