"""The parts of a v3 Mail Send document shared by all its messages, checked: content,
attachments, header fields, substitutions, custom arguments, categories and the mail and
tracking settings; and the two rules every header text obeys (`header_safe`) and every
substitution follows (`substitute`).

Security: a string that becomes part of a header is refused if it holds a control character
or a line break Python's email package would fold on (NEL, U+2028, U+2029 as well as C0), so
no JSON value can add a header field. Attachment content must be strict base64.
"""

from __future__ import annotations

import binascii
import json
import mimetypes
import re
from dataclasses import dataclass
from typing import Any

from mailrelay.core.text import has_control_chars
from mailrelay.submission import v3errors as E
from mailrelay.submission.smtpapi import MAX_CATEGORIES, MAX_CATEGORY, MAX_UNIQUE_ARGS_JSON
from mailrelay.submission.v3errors import Errors

MAX_SUBSTITUTIONS = 10_000  # per personalization: pairs, and bytes of keys and values
MAX_HEADER_NAME = 100  # ours: a name is never folded, so it must fit a line with its value
MAX_HEADER_TEXT = 16 * 1024  # ours: characters of a subject, name, filename or header value

# Header fields SendGrid does not let a request set (its error reference, "headers").
RESERVED_HEADERS = frozenset({
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding", "to",
    "from", "subject", "reply-to", "cc", "bcc",
})

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §2.2: printable ASCII but ":"
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_LINE_BREAKS = ("\x85", "\u2028", "\u2029")  # str.splitlines breaks here too, beyond C0
_TYPES = mimetypes.MimeTypes(filenames=())  # the built-in table, without reading the system's

# (setting, key, type, message) of the documented leaves of mail_settings and tracking_settings;
# the messages are SendGrid's but for the three bypass_* ones it does not list (ours, alike).
_MAIL_SETTINGS = (
    ("bypass_list_management", "enable", bool, "The bypass list management enable param should be a boolean value."),
    ("bypass_spam_management", "enable", bool, "The bypass spam management enable param should be a boolean value."),
    ("bypass_bounce_management", "enable", bool,
     "The bypass bounce management enable param should be a boolean value."),
    ("bypass_unsubscribe_management", "enable", bool,
     "The bypass unsubscribe management enable param should be a boolean value."),
    ("footer", "enable", bool, "The footer enable param should be a boolean value."),
    ("footer", "text", str, "The text/plain version of your footer should be a string."),
    ("footer", "html", str, "The text/html version of your footer should be a string."),
    ("sandbox_mode", "enable", bool, "The sandbox mode enable param should be a boolean value."),
)
_TRACKING_SETTINGS = (
    ("click_tracking", "enable", bool, "The click tracking enable param should be a boolean value."),
    ("click_tracking", "enable_text", bool, "The click tracking enable text must be a boolean value."),
    ("open_tracking", "enable", bool, "The open tracking enable param should be a boolean value."),
    ("open_tracking", "substitution_tag", str, "The open tracking substitution tag must be a string."),
    ("subscription_tracking", "enable", bool, "The subscription tracking enable param should be a boolean value."),
    ("subscription_tracking", "text", str,
     "The subscription tracking unsubscribe content for text/plain messages must be a string."),
    ("subscription_tracking", "html", str,
     "The subscription tracking unsubscribe content for text/html messages must be a string."),
    ("subscription_tracking", "substitution_tag", str,
     "The subscription tracking substitution tag must be a string value."),
    ("ganalytics", "enable", bool, "The Google Analytics enable param must be a boolean value."),
    *(("ganalytics", f"utm_{k}", str, f"The Google Analytics utm_{k} must be a string value.")
      for k in ("source", "medium", "term", "content", "campaign")),
)


@dataclass(frozen=True, slots=True)
class Content:
    type: str  # lower case, e.g. text/plain
    value: str


@dataclass(frozen=True, slots=True)
class Attachment:
    content: bytes  # decoded
    filename: str
    type: str  # as given, else guessed from the filename, else application/octet-stream
    disposition: str = "attachment"  # or "inline"
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class MailSettings:
    sandbox_mode: bool = False
    bypass_list_management: bool = False
    bypass_spam_management: bool = False
    bypass_bounce_management: bool = False
    bypass_unsubscribe_management: bool = False
    footer_text: str | None = None  # only when the footer is enabled
    footer_html: str | None = None


def header_safe(text: str) -> bool:
    """Whether `text` can be a header value as it is: no control character, no line break."""
    return not has_control_chars(text) and not any(c in text for c in _LINE_BREAKS)


def substitute(text: str, substitutions: dict[str, str]) -> str:
    """`text` with each key of `substitutions` replaced by its value, in one pass (a value is
    never substituted again); at each place the longest key that matches wins."""
    if not substitutions or not text:
        return text
    keys = sorted(substitutions, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, keys)))
    return pattern.sub(lambda m: substitutions[m.group(0)], text)


def contents(errors: Errors, value: object, *, required: bool) -> tuple[Content, ...]:
    """`content`: one or more {type, value}, text/plain first, then text/html, then others."""
    if value is None or value == []:
        if required:
            errors.add(E.CONTENT_REQUIRED, "content", "message.content")
        return ()
    if not isinstance(value, list):
        errors.add(E.CONTENT_REQUIRED, "content", "message.content")
        return ()
    out = []
    for i, item in enumerate(value):
        path = f"content.{i}"
        item = item if isinstance(item, dict) else {}
        ctype, text = item.get("type"), item.get("value")
        ok = _mime_type(errors, ctype, f"{path}.type", "message.content.type", E.CONTENT_TYPE_REQUIRED,
                        E.CONTENT_TYPE_TEXT, E.CONTENT_TYPE_CHARS)
        if text is None:
            errors.add(E.CONTENT_VALUE_REQUIRED, f"{path}.value", "message.content.value")
        elif not isinstance(text, str) or not text:
            errors.add(E.CONTENT_VALUE_TEXT, f"{path}.value", "message.content.value")
        elif ok:
            out.append(Content(str(ctype).lower(), text))
    ranks = [{"text/plain": 0, "text/html": 1}.get(c.type, 2) for c in out]
    if ranks != sorted(ranks):
        errors.add(E.CONTENT_ORDER, "content", "message.content.value")
    return tuple(out)


def _mime_type(errors: Errors, value: object, path: str, anchor: str, missing: str, text: str, chars: str) -> bool:
    if value is None:
        errors.add(missing, path, anchor)
    elif not isinstance(value, str) or not value:
        errors.add(text, path, anchor)
    elif ";" in value or not header_safe(value):
        errors.add(chars, path, anchor)
    elif not _MIME_TYPE.fullmatch(value) or value.lower().startswith(("multipart/", "message/")):
        errors.add(E.MIME_TYPE, path, anchor)
    else:
        return True
    return False


def attachments(errors: Errors, value: object) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.add(E.ATTACHMENT_TEXT, "attachments", "message.attachments.content")
        return ()
    out = []
    for i, item in enumerate(value):
        attachment = _attachment(errors, item if isinstance(item, dict) else {}, f"attachments.{i}")
        if attachment is not None:
            out.append(attachment)
    return tuple(out)


def _attachment(errors: Errors, item: dict[str, Any], path: str) -> Attachment | None:
    n = len(errors)
    raw, data = item.get("content"), b""
    if not isinstance(raw, str) or not raw:
        errors.add(E.ATTACHMENT_TEXT, f"{path}.content", "message.attachments.content")
    else:
        try:  # white space (line breaks) between the characters is allowed, nothing else
            data = binascii.a2b_base64("".join(raw.split()).encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            errors.add(E.ATTACHMENT_BASE64, f"{path}.content", "message.attachments.content")
    filename = item.get("filename")
    anchor = "message.attachments.filename"
    if filename is None:
        errors.add(E.FILENAME_REQUIRED, f"{path}.filename", anchor)
    elif not isinstance(filename, str) or not filename:
        errors.add(E.FILENAME_TEXT, f"{path}.filename", anchor)
    elif not header_safe(filename):
        errors.add(E.FILENAME_CHARS, f"{path}.filename", anchor)
    elif len(filename) > MAX_HEADER_TEXT:
        errors.add(E.TOO_LONG.format(n=MAX_HEADER_TEXT), f"{path}.filename", anchor)
    ctype = item.get("type")
    if ctype is not None:
        _mime_type(errors, ctype, f"{path}.type", "message.attachments.type", E.ATTACHMENT_TYPE_TEXT,
                   E.ATTACHMENT_TYPE_TEXT, E.ATTACHMENT_TYPE_CHARS)
    disposition = item.get("disposition", "attachment")
    if disposition not in ("attachment", "inline"):
        errors.add(E.DISPOSITION.format(value=json.dumps(disposition)[:100]), f"{path}.disposition",
                   "message.attachments.disposition")
    cid = item.get("content_id")
    anchor = "message.attachments.content_id"
    if cid is not None and (not isinstance(cid, str) or not cid):
        errors.add(E.CONTENT_ID_TEXT.format(value=json.dumps(cid)[:100]), f"{path}.content_id", anchor)
    elif cid is not None and (not header_safe(cid) or len(cid) > MAX_HEADER_TEXT):
        errors.add(E.CONTENT_ID_CHARS, f"{path}.content_id", anchor)
    elif cid is None and disposition == "inline":
        errors.add(E.CONTENT_ID_REQUIRED, f"{path}.content_id", anchor)
    if len(errors) > n or not isinstance(filename, str):
        return None
    if not isinstance(ctype, str):
        ctype = _TYPES.guess_type(filename, strict=False)[0] or "application/octet-stream"
    return Attachment(data, filename, ctype.lower(), str(disposition), cid)


def headers(errors: Errors, value: object, path: str, *, personal: bool) -> dict[str, str]:
    """`headers` of the message or (`personal`) of a personalization: name -> one-line text."""
    anchor = "message.personalizations.headers" if personal else "message.headers"
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(E.HEADERS_OBJECT, path, anchor)
        return {}
    out: dict[str, str] = {}
    for name, text in value.items():
        if not _FIELD_NAME.fullmatch(name):
            errors.add(E.HEADER_KEYS[personal], path, anchor)
        elif len(name) > MAX_HEADER_NAME:
            errors.add(E.TOO_LONG.format(n=MAX_HEADER_NAME), path, anchor)
        elif name.lower() in RESERVED_HEADERS:
            errors.add(E.HEADER_RESERVED[personal], path, anchor)
        elif any(name.lower() == seen.lower() for seen in out):
            errors.add(E.HEADER_DUPLICATE, path, anchor)
        elif not isinstance(text, str):
            errors.add(E.HEADER_VALUES[personal], path, anchor)
        elif not header_safe(text):
            errors.add(E.NO_CONTROLS, f"{path}.{name}", anchor)
        elif len(text) > MAX_HEADER_TEXT:
            errors.add(E.TOO_LONG.format(n=MAX_HEADER_TEXT), f"{path}.{name}", anchor)
        else:
            out[name] = text
    return out


def substitutions(errors: Errors, value: object, path: str) -> dict[str, str]:
    anchor = "message.personalizations.substitutions"
    if value is None:
        return {}
    if not isinstance(value, dict) or "" in value or not all(isinstance(v, str) for v in value.values()):
        errors.add(E.SUBSTITUTIONS, path, anchor)
    elif len(value) > MAX_SUBSTITUTIONS:
        errors.add(E.SUBSTITUTIONS_MANY, path, anchor)
    elif sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > MAX_SUBSTITUTIONS:
        errors.add(E.SUBSTITUTIONS_SIZE, path, anchor)
    else:
        return dict(value)
    return {}


def custom_args(errors: Errors, value: object, path: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """String values; their JSON, merged over `base` (the message's) when given, at most
    10,000 bytes."""
    anchor = "message.personalizations.custom_args" if path.startswith("personalizations") else "message.custom_args"
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        errors.add(E.CUSTOM_ARGS, path, anchor)
        return {}
    merged = value if base is None else base | value
    if len(json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_UNIQUE_ARGS_JSON:
        errors.add(E.CUSTOM_ARGS_SIZE, path, anchor)
        return {}
    return dict(value)


def categories(errors: Errors, value: object) -> tuple[str, ...]:
    anchor = "message.categories"
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.add(E.CATEGORIES_TEXT, "categories", anchor)
        return ()
    if len(value) > MAX_CATEGORIES:
        errors.add(E.CATEGORIES_MANY.format(n=len(value)), "categories", anchor)
        return ()
    for i, c in enumerate(value):
        path = f"categories.{i}"
        if not isinstance(c, str):
            errors.add(E.CATEGORIES_TEXT, path, anchor)
        elif len(c) > MAX_CATEGORY:
            errors.add(E.CATEGORY_LONG.format(value=c[:40] + "..."), path, anchor)
        elif not c.isascii():
            errors.add(E.CATEGORY_ASCII, path, anchor)
        elif has_control_chars(c):
            errors.add(E.NO_CONTROLS, path, anchor)
        elif c in value[:i]:
            errors.add(E.CATEGORY_TWICE.format(value=c), path, anchor)
    return tuple(value)


def mail_settings(errors: Errors, value: object) -> MailSettings:
    data = _settings(errors, value, "mail_settings", _MAIL_SETTINGS)

    def on(name: str) -> bool:
        setting = data.get(name)
        return isinstance(setting, dict) and setting.get("enable") is True

    footer = data.get("footer") if on("footer") else None
    return MailSettings(on("sandbox_mode"), on("bypass_list_management"), on("bypass_spam_management"),
                        on("bypass_bounce_management"), on("bypass_unsubscribe_management"),
                        footer.get("text") if footer else None, footer.get("html") if footer else None)


def tracking_settings(errors: Errors, value: object) -> dict[str, Any]:
    """The tracking settings as given, once their documented fields have the right types."""
    return _settings(errors, value, "tracking_settings", _TRACKING_SETTINGS)


def _settings(errors: Errors, value: object, section: str,
              table: tuple[tuple[str, str, type, str], ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(E.SETTINGS_OBJECT.format(name=section), section, f"message.{section}")
        return {}
    n = len(errors)
    for setting, key, kind, message in table:
        item = value.get(setting)
        if item is None:
            continue
        if not isinstance(item, dict):
            if not any(e.field == f"{section}.{setting}" for e in errors.found):
                errors.add(message, f"{section}.{setting}", f"message.{section}.{setting}.{key}")
        elif item.get(key) is not None and not isinstance(item[key], kind):
            errors.add(message, f"{section}.{setting}.{key}", f"message.{section}.{setting}.{key}")
    return dict(value) if len(errors) == n else {}
