"""What `inbox show` tells about a captured message: headers, text, HTML and attachments.

Parses with the standard library (`email.policy.default`), which never raises on malformed
mail: it records defects and carries on, so a broken test message still shows what it can.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart
from typing import Any

SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")
_LINK = re.compile(r"<a\b[^>]*\bhref\s*=", re.IGNORECASE)
_IMAGE = re.compile(r"<img\b", re.IGNORECASE)
_DKIM_TAG = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int  # bytes, decoded


@dataclass(frozen=True, slots=True)
class HtmlPart:
    size: int  # characters, decoded
    links: int
    images: int


@dataclass(frozen=True, slots=True)
class Summary:
    headers: dict[str, str]  # the SHOWN_HEADERS present, decoded (RFC 2047)
    dkim: list[dict[str, str]]  # per DKIM-Signature field: d, s, a
    text: str | None  # the text/plain body, with \n line ends
    html: HtmlPart | None
    attachments: list[Attachment] = field(default_factory=list)
    defects: int = 0  # malformations the parser noticed


def summarize(raw: bytes) -> Summary:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    headers = {}
    for name in SHOWN_HEADERS:
        values = [_text(v) for v in msg.get_all(name, [])]
        if values:
            headers[name] = ", ".join(values)
    dkim = [_dkim_tags(_text(v)) for v in msg.get_all("DKIM-Signature", [])]
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    html = None
    if html_part is not None:
        content = _content(html_part)
        html = HtmlPart(len(content), len(_LINK.findall(content)), len(_IMAGE.findall(content)))
    attachments = [Attachment(part.get_filename(), part.get_content_type(), len(_payload(part)))
                   for part in msg.iter_attachments()]
    defects = sum(len(part.defects) for part in msg.walk())
    return Summary(headers, dkim, _content(text_part) if text_part is not None else None, html, attachments, defects)


def _text(value: Any) -> str:
    return " ".join(str(value).split())


def _dkim_tags(value: str) -> dict[str, str]:
    tags = {k: v.strip() for k, v in _DKIM_TAG.findall(value)}
    return {k: tags[k] for k in ("d", "s", "a") if k in tags}


def _payload(part: MIMEPart) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _content(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset or undecodable: show what we can
        return _payload(part).decode("utf-8", "replace").replace("\r\n", "\n")
    text = content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")
    return text.replace("\r\n", "\n")
