"""SendGrid's own Python library, unchanged, pointed at our host."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os

import pytest
from python_http_client.exceptions import ForbiddenError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Category,
    Content,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Mail,
    Personalization,
    Subject,
    To,
)

from tests.integration.http.conftest import APINode
from tests.integration.http.sqlite import sqlite_only

BAD_KEY = {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                       "field": None, "help": None}]}

__all__ = ["sqlite_only"]  # the layer is tested on SQLite; services run on both databases


def rich_mail(data: bytes) -> Mail:
    mail = Mail()
    mail.from_email = From("shop@example.com", "The Shop")
    mail.subject = Subject("Your order")
    for who, order in (("ann@example.net", "1"), ("ben@example.org", "2")):
        p = Personalization()
        p.add_to(To(who))
        p.add_custom_arg(CustomArg("order", order))
        mail.add_personalization(p)
    mail.add_content(Content("text/plain", "Thanks for your order."))
    mail.add_content(Content("text/html", "<p>Thanks for your <b>order</b>.</p>"))
    mail.add_attachment(Attachment(FileContent(base64.b64encode(data).decode()), FileName("invoice.bin"),
                                   FileType("application/octet-stream"), Disposition("attachment")))
    mail.add_category(Category("orders"))
    mail.add_category(Category("receipts"))
    mail.add_custom_arg(CustomArg("campaign", "autumn"))
    return mail


def test_a_rich_mail_is_accepted_202_and_queued_as_one_message_per_personalization(api: APINode) -> None:
    data = os.urandom(3000)
    sg = SendGridAPIClient(api_key=api.key(), host=api.url)
    response = sg.send(rich_mail(data))
    assert response.status_code == 202
    x_message_id = response.headers["X-Message-Id"]
    assert len(x_message_id) == 22
    stored = api.node.stored()
    assert sorted(r["address"] for m in stored for r in m["recipients"]) == ["ann@example.net", "ben@example.org"]
    for m in stored:
        assert m["listener"] == "http" and m["mail_from"] == "shop@example.com"
        tags = json.loads(m["tags"])
        assert sorted(tags["category"]) == ["orders", "receipts"] and tags["x_message_id"] == x_message_id
        order = {"ann@example.net": "1", "ben@example.org": "2"}[m["recipients"][0]["address"]]
        assert tags["unique_args"] == {"campaign": "autumn", "order": order}
        msg = email.message_from_bytes(m["trace_headers"] + m["body"], policy=email.policy.default)
        assert msg["Subject"] == "Your order" and "The Shop" in msg["From"]
        assert msg["Bcc"] is None
        parts = [p.get_content_type() for p in msg.walk()]
        assert parts.index("text/plain") < parts.index("text/html")
        [attachment] = [p for p in msg.walk() if p.get_filename() == "invoice.bin"]
        assert attachment.get_content() == data  # byte-exact


def test_a_revoked_key_raises_unauthorized_with_sendgrids_exact_body(api: APINode) -> None:
    key = api.key()
    api.node.app.accounts.revoke_key(key)
    with pytest.raises(UnauthorizedError) as raised:
        SendGridAPIClient(api_key=key, host=api.url).send(rich_mail(b"x"))
    assert json.loads(raised.value.body) == BAD_KEY
    assert api.node.stored() == []


def test_a_key_without_mail_send_is_forbidden(api: APINode) -> None:
    key = api.key(scopes=["stats.read"])
    with pytest.raises(ForbiddenError) as raised:
        SendGridAPIClient(api_key=key, host=api.url).send(rich_mail(b"x"))
    assert json.loads(raised.value.body)["errors"][0]["message"] == "access forbidden"
    assert api.node.stored() == []
