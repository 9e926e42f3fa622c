"""The account's event webhook (/webhooks) and Inbound Parse settings (/webhooks/parse).

The same services and checks as the HTTP API's webhook settings (http/webhooks.py): the URL
through events.hooks.validate_url, internal addresses refused unless [webhooks]
allow_private_targets; WebhookService for the switches and SendGrid's signing key; the parse
settings are the account's receiving domains (accounts.domains). The last POSTs are the
dispatcher's log (events.postlog).

Security: the test POST goes where the signed-in account says, under the dispatcher's rules
(events.webhook.sample_post: no redirects, no proxies, internal addresses refused at connect
unless allowed). Another account's hostname is the same 404 as an unknown one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailrelay.accounts.domains import Domain, DomainService
from mailrelay.accounts.service import AccountError
from mailrelay.accounts.websessions import WebSession
from mailrelay.core.domains import DomainError
from mailrelay.core.status import SENDGRID_EVENTS
from mailrelay.events import postlog, signing
from mailrelay.events.hooks import WebhookService, validate_url
from mailrelay.events.webhook import sample_post
from mailrelay.web.common import (
    NOTICES,
    back,
    form_lists,
    posted,
    posted_about,
    run,
    services,
    signed_in,
    signed_in_page,
)
from mailrelay.web.services import WebServices

MAX_TEST_TIMEOUT = 10.0  # seconds a test POST may hold the page, as the API's test

router = APIRouter(include_in_schema=False)

NOTICES["webhook_saved"] = "Event webhook saved."
NOTICES["signing_on"] = "Signed webhooks are on: check the signature with the public key below."
NOTICES["signing_off"] = "Signed webhooks are off."
NOTICES["rotated"] = "A new signing secret is used from now on."
NOTICES["test_ok"] = "The test event was posted and answered 2xx (see the last POSTs)."
NOTICES["test_failed"] = "The test event failed: the last POSTs below say why."
NOTICES["parse_saved"] = "Inbound Parse settings saved."
NOTICES["parse_deleted"] = "The domain no longer receives mail."


def _hooks(svc: WebServices) -> WebhookService:
    return WebhookService(svc.engine)


def _url(svc: WebServices, url: str) -> str:
    """The URL as the API checks it (AccountError saying why not)."""
    return validate_url(url.strip(), allow_private=svc.settings.webhooks.allow_private_targets)


async def _page(request: Request, session: WebSession, *, status: int = 200, error: str = "",
                given: dict[str, object] | None = None) -> Response:
    svc = services(request)
    found = await run(request, _hooks(svc).settings, session.account_id)
    posts = await run(request, postlog.last_posts, svc.engine, session.account_id)
    public = signing.public_key(found.signing_key) if found.signing_key else ""
    form = given or {"url": found.url or "", "enabled": found.enabled and bool(found.url),
                     "events": set(found.events)}
    return signed_in_page(request, session, "webhooks.html", status, title="Webhooks", hook=found, form=form,
                          names=SENDGRID_EVENTS, public_key=public, posts=posts, error=error)


@router.get("/webhooks")
async def webhooks(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    return await _page(request, session)


@router.post("/webhooks")
async def save(request: Request) -> Response:
    """The URL, on/off and the events chosen (a box left unticked is switched off)."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, _ = got
    fields = await form_lists(request)
    svc = services(request)
    url = fields.get("url", [""])[0].strip()
    enabled = fields.get("enabled", [""])[0] == "on"
    chosen = set(fields.get("events", [])) & set(SENDGRID_EVENTS)
    try:
        checked = _url(svc, url) if url else None
        if enabled and not url:
            raise AccountError("give a URL to post events to, or leave the webhook off")
        await run(request, lambda: _hooks(svc).update(
            session.account_id, url=checked, clear_url=not url, enabled=enabled,
            events={name: name in chosen for name in SENDGRID_EVENTS}))
    except AccountError as exc:
        return await _page(request, session, status=400, error=str(exc),
                           given={"url": url, "enabled": enabled, "events": chosen})
    return back("/webhooks", "webhook_saved")


@router.post("/webhooks/signing")
async def set_signing(request: Request) -> Response:
    """SendGrid's signature on (a key pair, kept if there is one) or off (the key dropped)."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    on = fields.get("signed") == "on"
    await run(request, _hooks(services(request)).set_signed, session.account_id, on)
    return back("/webhooks", "signing_on" if on else "signing_off")


@router.post("/webhooks/secret")
async def rotate_secret(request: Request) -> Response:
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, _ = got
    await run(request, _hooks(services(request)).rotate_secret, session.account)
    return back("/webhooks", "rotated")


@router.post("/webhooks/test")
async def send_test(request: Request) -> Response:
    """One sample event to the URL given (the saved one by default), as the API's test
    endpoint; the outcome goes into the last POSTs."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    svc = services(request)
    found = await run(request, _hooks(svc).settings, session.account_id)
    try:
        url = _url(svc, fields.get("url", "") or found.url or "")
    except AccountError as exc:
        return await _page(request, session, status=400, error=f"Test event: {exc}")
    done = await sample_post(url, secret=found.secret, signing_key=found.signing_key,
                             timeout=min(svc.settings.webhooks.timeout, MAX_TEST_TIMEOUT),
                             allow_private=svc.settings.webhooks.allow_private_targets)
    await run(request, postlog.record_one, svc.engine, session.account_id, done)
    return back("/webhooks", "test_ok" if done.error is None else "test_failed")


# -- Inbound Parse -----------------------------------------------------------------------------


def _domains(svc: WebServices) -> DomainService:
    return DomainService(svc.engine)


async def _parse_page(request: Request, session: WebSession, *, status: int = 200, error: str = "") -> Response:
    found = await run(request, _domains(services(request)).list, session.account)
    return signed_in_page(request, session, "webhooks_parse.html", status, title="Inbound Parse",
                          receiving=[d for d in found if d.inbound], others=[d for d in found if not d.inbound],
                          error=error)


@router.get("/webhooks/parse")
async def parse_settings(request: Request) -> Response:
    session = await signed_in(request)
    if isinstance(session, Response):
        return session
    return await _parse_page(request, session)


def _own(svc: WebServices, account: str, hostname: str, inbound: bool) -> Domain | None:
    """The account's domain `hostname` (receiving, if `inbound`), else None (as the API's 404)."""
    found = _domains(svc).get(hostname.strip().lower()[:255])
    if found is None or found.account_name != account or (inbound and not found.inbound):
        return None
    return found


def _set_parse(svc: WebServices, domain: Domain, url: str, raw: bool) -> None:
    if url:
        _url(svc, url)
    _domains(svc).set_inbound(domain.name, inbound=True, webhook=url or None, clear_webhook=not url, raw=raw)


@router.post("/webhooks/parse")
async def add_parse(request: Request) -> Response:
    """Receive mail for one of the account's domains, posted to a URL (as the API's create)."""
    got = await posted(request)
    if isinstance(got, Response):
        return got
    session, fields = got
    svc = services(request)
    domain = await run(request, _own, svc, session.account, fields.get("hostname", ""), False)
    if domain is None:
        return await _parse_page(request, session, status=400,
                                 error="Not a domain of this account; add it as a sender domain first.")
    try:
        await run(request, _set_parse, svc, domain, fields.get("url", "").strip(), fields.get("raw") == "on")
    except (AccountError, DomainError) as exc:
        return await _parse_page(request, session, status=400, error=str(exc))
    return back("/webhooks/parse", "parse_saved")


@router.post("/webhooks/parse/{hostname}")
async def change_parse(request: Request, hostname: str) -> Response:
    svc = services(request)
    got = await posted_about(request, lambda session: run(request, _own, svc, session.account, hostname, True),
                             "receiving domain")
    if isinstance(got, Response):
        return got
    session, fields, domain = got
    try:
        await run(request, _set_parse, svc, domain, fields.get("url", "").strip(), fields.get("raw") == "on")
    except (AccountError, DomainError) as exc:
        return await _parse_page(request, session, status=400, error=f"{domain.name}: {exc}")
    return back("/webhooks/parse", "parse_saved")


@router.post("/webhooks/parse/{hostname}/delete")
async def delete_parse(request: Request, hostname: str) -> Response:
    """Stop receiving mail for the domain (it stays a sender domain), as the API's delete."""
    svc = services(request)
    got = await posted_about(request, lambda session: run(request, _own, svc, session.account, hostname, True),
                             "receiving domain")
    if isinstance(got, Response):
        return got
    _, _, domain = got
    await run(request, lambda: _domains(svc).set_inbound(domain.name, inbound=False, clear_webhook=True))
    return back("/webhooks/parse", "parse_deleted")
