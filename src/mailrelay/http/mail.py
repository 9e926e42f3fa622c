"""`POST /v3/mail/send`: SendGrid's mail send, onto the same queue as SMTP mail.

The document is validated whole (mailrelay.submission.v3mail) and answered 400 with every
problem found; then each personalization becomes one message, and the request is queued through
mailrelay.submission.api with the same plan, quota and sender-domain rules as SMTP. 202 comes
only after the commit, with `X-Message-Id`, the prefix of `sg_message_id` in the events.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from starlette.routing import Route

from mailrelay.core.ids import random_id
from mailrelay.core.reply import INSUFFICIENT_STORAGE, Refusal
from mailrelay.http.auth import Caller, client_ip, needs, services
from mailrelay.http.batches import check_batch
from mailrelay.http.errors import ERRORS_CONTENT, RETRY_AFTER, APIError, Problem
from mailrelay.http.templates import template_renderer
from mailrelay.submission.api import APIMessage, RateRefusal
from mailrelay.submission.v3errors import MailSendError
from mailrelay.submission.v3mail import parse_mail_send
from mailrelay.submission.v3mime import build_messages

# SendGrid's own text when a From: address is not one of the account's verified senders.
NOT_VERIFIED_SENDER = ("The from address does not match a verified Sender Identity. Mail cannot be sent "
                       "until this error is resolved.")
MAX_DEPTH = 32  # nesting of the JSON document; SendGrid's shape needs 5
INLINE_PREPARE = 16 * 1024  # bytes of a document read and built on the event loop itself


def new_message_id() -> str:
    """An X-Message-Id: 22 letters and digits, as long as SendGrid's."""
    return random_id(22)


def _depth_ok(data: object) -> bool:
    """No container of the parsed document deeper than MAX_DEPTH. Walked after json.loads (whose
    own recursion limit turns a pathological nesting into RecursionError): a walk of the
    containers costs a few microseconds where a scan of every character cost 0.1 ms."""
    level: list[object] = [data]
    for _ in range(MAX_DEPTH):
        level = [v for c in level if isinstance(c, (dict, list))
                 for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return True
    return not any(isinstance(c, (dict, list)) for c in level)


def _refusal(reply_code: int, enhanced: str, text: str) -> APIError:
    """An SMTP refusal of the shared policy, as SendGrid's API answers the same case."""
    if text.startswith("Maximum credits exceeded"):
        return APIError(401, [Problem("Maximum credits exceeded", None, text)])
    if reply_code == 552:
        return APIError(413, [Problem(text)])
    if reply_code == 550 and enhanced == "5.7.1" and "sender domain" in text:
        return APIError(403, [Problem(NOT_VERIFIED_SENDER, "from", text)])
    if reply_code == 452 and enhanced != INSUFFICIENT_STORAGE.status:  # too many recipients
        return APIError(400, [Problem(text, "personalizations")])
    if reply_code >= 500:
        return APIError(400, [Problem(text)])
    return APIError(503, [Problem(text)], headers={"Retry-After": RETRY_AFTER})


def _prepare(raw: bytes, now: float, hostname: str, x_message_id: str, engine: sa.Engine,
             account_id: int) -> list[APIMessage] | None:
    """The request's messages, or None for sandbox_mode; APIError for a bad document (and for a
    template_id or batch_id that is not the account's)."""
    try:
        data = json.loads(raw.decode("utf-8"))
        if not _depth_ok(data):
            raise ValueError("nested too deeply")
    except (ValueError, RecursionError):
        raise APIError(400, [Problem("Bad Request", None, "the body must be a JSON object")]) from None
    try:
        mail = parse_mail_send(data, now=now, escaped=b"\\u" in raw)
        if mail.sandbox_mode:
            return None
        if mail.batch_id is not None:
            check_batch(engine, account_id, mail.batch_id)
        render = None if mail.template_id is None else template_renderer(engine, account_id, mail.template_id)
        built = build_messages(mail, hostname=hostname, x_message_id=x_message_id, now=now, render=render)
    except MailSendError as exc:
        raise APIError(400, [Problem(e.message, e.field, e.help) for e in exc.errors]) from None
    return [APIMessage(mail_from=o.mail_from, recipients=o.recipients, body=o.body, message_id=o.message_id,
                       subject=o.subject, tags=o.tags, send_at=o.send_at, batch_id=mail.batch_id) for o in built]


_ADDRESS = {"type": "object", "required": ["email"],
            "properties": {"email": {"type": "string", "format": "email"}, "name": {"type": "string"}}}
_ADDRESSES = {"type": "array", "items": _ADDRESS}
# The document's shape for the OpenAPI description (the handler reads the raw body and checks
# every rule, with SendGrid's texts and field paths, in mailrelay.submission.v3mail).
MAIL_SEND_SCHEMA = {
    "type": "object", "required": ["personalizations", "from"],
    "properties": {
        "personalizations": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
            "type": "object", "required": ["to"],
            "properties": {"to": {**_ADDRESSES, "minItems": 1}, "cc": _ADDRESSES, "bcc": _ADDRESSES,
                           "subject": {"type": "string"}, "headers": {"type": "object"},
                           "substitutions": {"type": "object"}, "dynamic_template_data": {"type": "object"},
                           "custom_args": {"type": "object"}, "send_at": {"type": "integer"}}}},
        "from": _ADDRESS, "reply_to": _ADDRESS, "reply_to_list": _ADDRESSES, "subject": {"type": "string"},
        "content": {"type": "array", "items": {"type": "object", "required": ["type", "value"], "properties": {
            "type": {"type": "string"}, "value": {"type": "string"}}}},
        "attachments": {"type": "array", "items": {"type": "object", "required": ["content", "filename"],
                                                   "properties": {"content": {"type": "string"},
                                                                  "filename": {"type": "string"},
                                                                  "type": {"type": "string"},
                                                                  "disposition": {"type": "string"},
                                                                  "content_id": {"type": "string"}}}},
        "template_id": {"type": "string"}, "headers": {"type": "object"},
        "categories": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
        "custom_args": {"type": "object"}, "send_at": {"type": "integer"}, "batch_id": {"type": "string"},
        "asm": {"type": "object"}, "ip_pool_name": {"type": "string"}, "mail_settings": {"type": "object"},
        "tracking_settings": {"type": "object"},
    },
}
_ERRORS = ERRORS_CONTENT


PATH = "/v3/mail/send"
# The operation in the OpenAPI document, as FastAPI would write it for this route.
OPERATION: dict[str, Any] = {
    "summary": "Send mail (SendGrid v3 mail send)", "operationId": "mail_send_v3_mail_send_post",
    "requestBody": {"required": True, "content": {"application/json": {"schema": MAIL_SEND_SCHEMA}}},
    "responses": {
        "202": {"description": "Queued; X-Message-Id names it in events"},
        "200": {"description": "mail_settings.sandbox_mode: validated, nothing sent"},
        "400": {"description": "invalid document", "content": _ERRORS},
        "401": {"description": "bad key, or the plan's credits are used up", "content": _ERRORS},
        "403": {"description": "key lacks mail.send, or From: not the account's", "content": _ERRORS},
        "413": {"description": "too large", "content": _ERRORS},
        "429": {"description": "plan rate limit, or too many failed keys", "content": _ERRORS},
        "503": {"description": "storage unavailable; try again", "content": _ERRORS}},
}
_caller = needs("mail.send")


def install(api: FastAPI) -> None:
    """POST /v3/mail/send as a plain Starlette route ahead of all others, and its operation
    in the OpenAPI document. The one route an application calls per email skips FastAPI's
    dependency solving and its routing through every router: 15 % of the request's CPU."""
    api.router.routes.insert(0, Route(PATH, _endpoint, methods=["POST"]))
    paths: dict[str, Any] = api.state.openapi_paths
    paths[PATH] = {"post": OPERATION}


async def _endpoint(request: Request) -> Response:
    return await mail_send(request, await _caller(request))


async def mail_send(request: Request, who: Caller) -> Response:
    svc = services(request)
    raw = await request.body()
    now = time.time()
    x_message_id = new_message_id()
    # Parsing a 40 MB document or building 1,000 messages is CPU work: off the event loop, so
    # other requests (and their 202s) are not held up behind it. A small one (0.15 ms for 2 KB)
    # costs less than the trip to a thread and back; a template or batch reads the database.
    args = (raw, now, svc.settings.server.hostname, x_message_id, svc.engine, who.account.id)
    if len(raw) <= INLINE_PREPARE and b'"template_id"' not in raw and b'"batch_id"' not in raw:
        messages = _prepare(*args)
    else:
        messages = await asyncio.to_thread(_prepare, *args)
    if messages is None:
        return Response(status_code=200)  # sandbox_mode: validated, not sent, no credits used
    tls = "TLS" if svc.settings.http.tls else None
    try:
        await svc.submission.submit(who.account, messages, client_ip=client_ip(request), auth_user="apikey",
                                    tls_version=tls)
    except RateRefusal as exc:
        raise APIError(429, [Problem("too many requests", None,
                                     f"plan rate limit: {exc.limit} emails a minute")],
                       headers={"X-RateLimit-Limit": str(exc.limit), "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": str(int(now + exc.retry_after) + 1),
                                "Retry-After": str(int(exc.retry_after) + 1)}) from None
    except Refusal as exc:
        r = exc.reply
        raise _refusal(r.code, r.status, r.text) from None
    return Response(status_code=202, headers={"X-Message-Id": x_message_id})
