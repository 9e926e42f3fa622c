"""What submission reads from a message's header: Message-ID and Subject for events (decoded
by mailrelay.core.headers, as for received mail), and SendGrid's X-SMTPAPI header (category,
unique_args), which is removed before the message is stored.

Runs for every accepted message, so it looks only at the header section, with bytes operations:
a multi-megabyte body is never scanned. An X-SMTPAPI field is always removed (with its
continuation lines), valid or not; an invalid one is ignored with one warning, never an error.
Only `category` and `unique_args` are honoured; other X-SMTPAPI keys ("to", "sub", "filters",
"send_at", ...) are dropped with the header, see docs/webhooks.md.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from mailrelay.core.headers import message_id_value, subject_value
from mailrelay.core.text import has_control_chars

log = logging.getLogger("mailrelay.submission")

MAX_HEADER = 32 * 1024  # bytes of one X-SMTPAPI value, unfolded
MAX_CATEGORIES = 10  # SendGrid's limit per message
MAX_CATEGORY = 255  # characters of one category
MAX_UNIQUE_ARGS_JSON = 10_000  # bytes of unique_args as JSON, SendGrid's limit for custom args
MAX_ARG_KEY = 100

# A field we read, with its continuation lines (RFC 5322 §2.2.3 folding) and its line end.
_FIELD = re.compile(rb"(?im)^(message-id|subject|x-smtpapi)[ \t]*:(.*(?:\r?\n[ \t].*)*)(?:\r?\n)?")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class Inspected:
    body: bytes  # the message as it will be stored (without X-SMTPAPI)
    message_id: str | None = None
    subject: str | None = None
    tags: dict[str, Any] | None = None  # {"category": [...], "unique_args": {...}}


class InvalidSMTPAPI(ValueError):
    """Why an X-SMTPAPI header was ignored (logged, never raised out of `inspect`)."""


def header_end(body: bytes) -> int:
    """Offset just past the header section's last field (before the empty line); len(body)
    when there is no body. Searches for a bare-LF end only inside a CRLF header's span, so a
    CRLF message's body is never scanned to its end."""
    if body.startswith((b"\r\n", b"\n")):
        return 0
    crlf = body.find(b"\r\n\r\n")
    lf = body.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else len(body))
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 1
    return crlf + 2 if crlf >= 0 else len(body)


def inspect(body: bytes) -> Inspected:
    """Message-ID, Subject and X-SMTPAPI tags of `body`, and `body` without X-SMTPAPI."""
    end = header_end(body)
    header = body[:end]
    message_id: str | None = None
    subject: str | None = None
    api: list[tuple[int, int, bytes]] = []  # (start, end, value) of each X-SMTPAPI field
    for m in _FIELD.finditer(header):
        name = m.group(1).lower()
        if name == b"x-smtpapi":
            api.append((m.start(), m.end(), m.group(2)))
        elif name == b"message-id" and message_id is None:
            message_id = message_id_value(m.group(2))
        elif name == b"subject" and subject is None:
            subject = subject_value(m.group(2))
    if not api:
        return Inspected(body, message_id, subject)
    tags: dict[str, Any] | None = None
    try:
        if len(api) > 1:
            raise InvalidSMTPAPI(f"{len(api)} X-SMTPAPI fields, expected one")
        tags = parse(api[0][2])
    except InvalidSMTPAPI as exc:
        log.warning("ignoring invalid X-SMTPAPI header (removed from the message): %s", exc)
    # Cut the fields out; everything else, body included, stays byte for byte.
    parts, pos = [], 0
    for start, stop, _ in api:
        parts.append(body[pos:start])
        pos = stop
    parts.append(body[pos:])
    return Inspected(b"".join(parts), message_id, subject, tags)


def parse(value: bytes) -> dict[str, Any] | None:
    """The tags we keep from an X-SMTPAPI value (folded or not): None if it has neither
    `category` nor `unique_args`; InvalidSMTPAPI if it is not JSON of the documented shape."""
    if len(value) > MAX_HEADER:
        raise InvalidSMTPAPI(f"longer than {MAX_HEADER} bytes")
    text = _FOLD.sub(b"", value).decode("utf-8", "replace")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidSMTPAPI(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise InvalidSMTPAPI("not a JSON object")
    tags: dict[str, Any] = {}
    if "category" in data:
        tags["category"] = _categories(data["category"])
    if "unique_args" in data:
        tags["unique_args"] = _unique_args(data["unique_args"])
    return tags or None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _categories(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
        raise InvalidSMTPAPI("category must be a string or a list of strings")
    if len(items) > MAX_CATEGORIES:
        raise InvalidSMTPAPI(f"more than {MAX_CATEGORIES} categories")
    if any(len(c) > MAX_CATEGORY or has_control_chars(c) for c in items):
        raise InvalidSMTPAPI(f"a category is longer than {MAX_CATEGORY} characters or has control characters")
    return list(dict.fromkeys(items))


def _unique_args(value: Any) -> dict[str, str | int | float]:
    if not isinstance(value, dict):
        raise InvalidSMTPAPI("unique_args must be an object")
    for k, v in value.items():
        if len(k) > MAX_ARG_KEY or has_control_chars(k):
            raise InvalidSMTPAPI(f"a unique_args key is longer than {MAX_ARG_KEY} characters or has control "
                                 "characters")
        # bool is an int in Python, but not a value SendGrid accepts
        if isinstance(v, bool) or not isinstance(v, str | int | float) or (isinstance(v, float) and
                                                                          not math.isfinite(v)):
            raise InvalidSMTPAPI(f"unique_args value of {k[:40]!r} must be a string or a number")
    if len(json.dumps(value)) > MAX_UNIQUE_ARGS_JSON:
        raise InvalidSMTPAPI(f"unique_args longer than {MAX_UNIQUE_ARGS_JSON} bytes")
    return dict(value)

