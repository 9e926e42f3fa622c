"""SendGrid's v3 Mail Send document (`POST /v3/mail/send`), checked and read into a MailSend.

The whole documented shape is read: personalizations (to, cc, bcc, subject, headers,
substitutions, dynamic_template_data, custom_args, send_at, from), from, reply_to or
reply_to_list, subject, content, attachments, template_id, headers, categories, custom_args,
send_at, batch_id, asm, ip_pool_name, mail_settings and tracking_settings. Every error found is
reported at once (mailrelay.submission.v3errors: SendGrid's texts and `field` paths); fields
SendGrid does not know are ignored, as SendGrid ignores them. `template_id` and each
personalization's dynamic_template_data are checked and kept: rendering a template is the
caller's (mailrelay.submission.v3mime.build_messages takes a renderer).

Security: addresses must be ASCII mailboxes (RFC 5321 §4.1.2) that Python's email package
also writes as one; every header text is one line (v3parts.header_safe), a subject again after
its substitutions; a string with a lone surrogate ("\\ud800" in JSON) is refused before
anything else, as it has no UTF-8. Work is bounded: recipient lists past SendGrid's limit of
1000 recipients are not read, and the error list stops at v3errors.MAX_ERRORS. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address as HeaderAddress
from typing import Any

from mailrelay.core.address import validate_mailbox
from mailrelay.submission import v3errors as E
from mailrelay.submission import v3parts
from mailrelay.submission.v3errors import Errors, Full, MailSendError
from mailrelay.submission.v3parts import MAX_HEADER_TEXT, Attachment, Content, MailSettings, header_safe, substitute

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000  # to + cc + bcc over all personalizations
MAX_REPLY_TO = 1000
MAX_SCHEDULE = 72 * 3600  # send_at at most this far after the request
MAX_GROUPS_TO_DISPLAY = 25

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Asm:
    group_id: int
    groups_to_display: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Personalization:
    to: tuple[Address, ...]
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    subject: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)
    dynamic_template_data: dict[str, Any] | None = None
    custom_args: dict[str, str] = field(default_factory=dict)
    send_at: int | None = None
    from_: Address | None = None

    @property
    def recipients(self) -> list[str]:
        return [a.email for a in (*self.to, *self.cc, *self.bcc)]


@dataclass(frozen=True, slots=True)
class MailSend:
    """A checked request: one message per personalization, each person's fields over the
    message's. `template_id`, when set, is for the caller to render."""

    personalizations: tuple[Personalization, ...]
    from_: Address
    reply_to: tuple[Address, ...] = ()  # reply_to, or reply_to_list
    subject: str | None = None
    content: tuple[Content, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    template_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
    custom_args: dict[str, str] = field(default_factory=dict)
    send_at: int | None = None
    batch_id: str | None = None
    asm: Asm | None = None
    ip_pool_name: str | None = None
    mail_settings: MailSettings = field(default_factory=MailSettings)
    tracking_settings: dict[str, Any] = field(default_factory=dict)  # as given

    @property
    def recipient_count(self) -> int:
        return sum(len(p.recipients) for p in self.personalizations)

    @property
    def sandbox_mode(self) -> bool:
        """mail_settings.sandbox_mode.enable: check the request, send nothing (SendGrid: 200)."""
        return self.mail_settings.sandbox_mode


@functools.lru_cache(maxsize=4096)  # a pure check, 30 µs a call: the same senders come again and again
def valid_address(email: str) -> bool:
    """An ASCII mailbox (RFC 5321 §4.1.2) that Python's email package also reads as one."""
    if not validate_mailbox(email, utf8=False):
        return False
    try:
        HeaderAddress(addr_spec=email)
    except (ValueError, IndexError, HeaderParseError):
        return False
    return True


def parse_mail_send(data: object, *, now: float, escaped: bool = True) -> MailSend:
    """The MailSend that the JSON document `data` asks for at time `now`; MailSendError with
    every error found (at most v3errors.MAX_ERRORS) otherwise. `escaped=False` says the JSON
    text had no `\\u` escape, so no lone surrogate can be in it (UTF-8 cannot carry one)
    and the walk that looks for them is skipped."""
    reader = _Reader(now, escaped)
    mail = None
    with contextlib.suppress(Full):  # the errors so far are the answer
        mail = reader.mail(data)
    if mail is None or len(reader.errors):
        raise MailSendError(reader.errors.found)
    return mail


def _has_lone_surrogate(data: object) -> bool:
    """Whether a string (or key) anywhere in `data` has no UTF-8 form; a loop, no recursion."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _count(value: object) -> int:
    return len(value) if isinstance(value, list) else 0


class _Reader:
    def __init__(self, now: float, escaped: bool = True) -> None:
        self.now = now
        self.escaped = escaped
        self.errors = Errors()
        self.err = self.errors.add

    def mail(self, data: object) -> MailSend | None:
        if not isinstance(data, dict):
            self.err(E.NOT_AN_OBJECT, None)
            return None
        if self.escaped and _has_lone_surrogate(data):
            self.err(E.BAD_UTF8, None)
            return None
        errors = self.errors
        personalizations = self.personalizations(data.get("personalizations"))
        sender = self.address(data.get("from"), "from", E.FROM_REQUIRED, E.FROM_INVALID, "message.from")
        reply_to = self.reply_to(data.get("reply_to"), data.get("reply_to_list"))
        template_id = self.template_id(data.get("template_id"))
        templated = data.get("template_id") is not None  # even a bad one: its own error is enough
        subject = self.subject(data.get("subject"), "subject", "message.subject")
        every = bool(personalizations) and all(p.subject for p in personalizations)
        if data.get("subject") is None and not templated and not every:
            self.err(E.SUBJECT_REQUIRED, "subject", "message.subject")
        content = v3parts.contents(errors, data.get("content"), required=not templated)
        attachments = v3parts.attachments(errors, data.get("attachments"))
        headers = v3parts.headers(errors, data.get("headers"), "headers", personal=False)
        categories = v3parts.categories(errors, data.get("categories"))
        custom_args = v3parts.custom_args(errors, data.get("custom_args"), "custom_args")
        for i, p in enumerate(personalizations):
            if p.custom_args:
                v3parts.custom_args(errors, p.custom_args, f"personalizations.{i}.custom_args", custom_args)
            text = p.subject or subject
            if text and p.substitutions and not header_safe(substitute(text, p.substitutions)):
                self.err(E.SUBSTITUTED_SUBJECT, f"personalizations.{i}.substitutions",
                         "message.personalizations.substitutions")
        send_at = self.send_at(data.get("send_at"), "send_at", "message.send_at")
        batch_id = self.batch_id(data.get("batch_id"))
        asm = self.asm(data.get("asm"))
        ip_pool = self.ip_pool(data.get("ip_pool_name"))
        mail_settings = v3parts.mail_settings(errors, data.get("mail_settings"))
        tracking = v3parts.tracking_settings(errors, data.get("tracking_settings"))
        if len(errors) or sender is None:
            return None
        return MailSend(tuple(personalizations), sender, reply_to, subject, content, attachments, template_id,
                        headers, categories, custom_args, send_at, batch_id, asm, ip_pool, mail_settings, tracking)

    # --- who: personalizations and addresses -----------------------------------------------------

    def personalizations(self, value: object) -> list[Personalization]:
        if not isinstance(value, list) or not value:
            self.err(E.NO_PERSONALIZATIONS, "personalizations", "-Personalizations-Errors")
            return []
        if len(value) > MAX_PERSONALIZATIONS:
            self.err(E.TOO_MANY_PERSONALIZATIONS.format(n=len(value)), "personalizations", "message.personalizations")
            return []
        out: list[Personalization] = []
        total = 0
        for i, item in enumerate(value):
            if isinstance(item, dict):
                total += sum(_count(item.get(kind)) for kind in ("to", "cc", "bcc"))
                if total > MAX_RECIPIENTS:  # the lists past the limit are not read
                    self.err(E.TOO_MANY_RECIPIENTS, "personalizations", "message.personalizations")
                    return out
            p = self.personalization(item, f"personalizations.{i}")
            if p is not None:
                out.append(p)
        return out

    def personalization(self, item: object, path: str) -> Personalization | None:
        if not isinstance(item, dict):
            self.err(E.TO_REQUIRED, f"{path}.to", "message.personalizations.to")
            return None
        n = len(self.errors)
        to = self.recipients(item.get("to"), path, "to")
        cc = self.recipients(item.get("cc"), path, "cc")
        bcc = self.recipients(item.get("bcc"), path, "bcc")
        self.unique(path, to, cc, bcc)
        subject = self.subject(item.get("subject"), f"{path}.subject", "message.personalizations.subject")
        headers = v3parts.headers(self.errors, item.get("headers"), f"{path}.headers", personal=True)
        substitutions = v3parts.substitutions(self.errors, item.get("substitutions"), f"{path}.substitutions")
        data = item.get("dynamic_template_data")
        if data is not None and not isinstance(data, dict):
            self.err(E.TEMPLATE_DATA, f"{path}.dynamic_template_data", "message.personalizations")
        custom_args = v3parts.custom_args(self.errors, item.get("custom_args"), f"{path}.custom_args")
        send_at = self.send_at(item.get("send_at"), f"{path}.send_at", "message.personalizations.send_at")
        sender = None
        if item.get("from") is not None:
            sender = self.address(item["from"], f"{path}.from", E.FROM_REQUIRED, E.FROM_INVALID, "message.from")
        if len(self.errors) > n:
            return None
        return Personalization(to, cc, bcc, subject, headers, substitutions, data, custom_args, send_at, sender)

    def recipients(self, value: object, path: str, kind: str) -> tuple[Address, ...]:
        anchor = f"message.personalizations.{kind}"
        if value is None and kind != "to":
            return ()
        if not isinstance(value, list) or (kind == "to" and not value):
            self.err(E.TO_REQUIRED if kind == "to" else E.LIST_SHAPE.format(kind=kind), f"{path}.{kind}", anchor)
            return ()
        out = []
        for j, item in enumerate(value):
            address = self.address(item, f"{path}.{kind}.{j}", E.RECIPIENT_SHAPE, E.INVALID_ADDRESS, anchor)
            if address is not None:
                out.append(address)
        return tuple(out)

    def unique(self, path: str, *lists: tuple[Address, ...]) -> None:
        """SendGrid's rule: an address once in a personalization's to, cc and bcc together."""
        seen: set[str] = set()
        for kind, addresses in zip(("to", "cc", "bcc"), lists, strict=True):
            for a in addresses:
                if a.email.lower() in seen:
                    self.err(E.DUPLICATE.format(email=a.email, field=f"{path}.{kind}"), path,
                             "message.recipient-errors")
                    return
                seen.add(a.email.lower())

    def address(self, item: object, path: str, shape: str, invalid: str, anchor: str) -> Address | None:
        """An {"email", "name"} object: `shape` when it is not one, `invalid` for a bad address."""
        email = item.get("email") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(email, str) or not email:
            self.err(shape, f"{path}.email", anchor)
            return None
        ok = valid_address(email)
        if not ok:
            self.err(invalid, f"{path}.email", anchor)
        name = item.get("name")
        if name is not None and not (isinstance(name, str) and header_safe(name) and len(name) <= MAX_HEADER_TEXT):
            self.err(E.NAME_TEXT, f"{path}.name", anchor)
            return None
        return Address(email, name or None) if ok else None

    def reply_to(self, one: object, many: object) -> tuple[Address, ...]:
        anchor = "message.reply_to"
        if one is not None and many is not None:
            self.err(E.REPLY_TO_BOTH, "reply_to_list", anchor)
            return ()
        if one is not None:
            address = self.address(one, "reply_to", E.REPLY_TO_SHAPE, E.REPLY_TO_SHAPE, anchor)
            return (address,) if address else ()
        if many is None:
            return ()
        if not isinstance(many, list) or len(many) > MAX_REPLY_TO:
            self.err(E.REPLY_TO_SHAPE, "reply_to_list", anchor)
            return ()
        out: list[Address] = []
        for i, item in enumerate(many):
            address = self.address(item, f"reply_to_list.{i}", E.REPLY_TO_SHAPE, E.REPLY_TO_SHAPE, anchor)
            if address is not None and any(a.email.lower() == address.email.lower() for a in out):
                self.err(E.REPLY_TO_UNIQUE.format(email=address.email), f"reply_to_list.{i}.email", anchor)
            elif address is not None:
                out.append(address)
        return tuple(out)

    # --- scalars -------------------------------------------------------------------------------

    def subject(self, value: object, path: str, anchor: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.err(E.SUBJECT_TEXT, path, anchor)
        elif not header_safe(value):
            self.err(E.NO_CONTROLS, path, anchor)
        elif len(value) > MAX_HEADER_TEXT:
            self.err(E.TOO_LONG.format(n=MAX_HEADER_TEXT), path, anchor)
        else:
            return value
        return None

    def send_at(self, value: object, path: str, anchor: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.err(E.SEND_AT, path, anchor)
        elif value > self.now + MAX_SCHEDULE:
            self.err(E.SEND_AT_FAR, path, anchor)
        else:
            return value  # a time in the past means now: SendGrid sends such mail at once
        return None

    def template_id(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.err(E.TEMPLATE_ID.format(value=json.dumps(value)[:100]), "template_id", "message.template_id")
            return None
        return value

    def batch_id(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.err(E.BATCH_ID, "batch_id", "message.batch_id")
        elif not (0 < len(value) <= 128 and value.isascii() and value.isprintable()):
            self.err(E.BATCH_ID_CHARS, "batch_id", "message.batch_id")
        else:
            return value
        return None

    def asm(self, value: object) -> Asm | None:
        if value is None:
            return None
        group = value.get("group_id") if isinstance(value, dict) else None
        display = value.get("groups_to_display", []) if isinstance(value, dict) else []
        if not isinstance(group, int) or isinstance(group, bool):
            self.err(E.ASM_GROUP, "asm.group_id", "message.asm.group_id")
        elif not isinstance(display, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in display):
            self.err(E.ASM_DISPLAY, "asm.groups_to_display", "message.asm.groups_to_display")
        elif len(display) > MAX_GROUPS_TO_DISPLAY:
            self.err(E.ASM_DISPLAY_MANY, "asm.groups_to_display", "message.asm.groups_to_display")
        else:
            return Asm(group, tuple(display))
        return None

    def ip_pool(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.err(E.IP_POOL, "ip_pool_name", "message.ip_pool_name")
        elif not 2 <= len(value) <= 64 or not header_safe(value):
            self.err(E.IP_POOL_LENGTH, "ip_pool_name", "message.ip_pool_name")
        else:
            return value
        return None
