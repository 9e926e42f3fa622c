"""Events as the event webhook posts them: objects in the shape of SendGrid's Event Webhook.

Only events that change a recipient's state are posted (`core.status.POSTED_EVENTS`); bookkeeping events
(suppression-added, bounce-queued, delay-warning, operator retries and deletes) stay in the log.
Internal names map to SendGrid's where one fits (`core.status.EVENT_NAMES`): bounced, expired and
bounced-by-operator are all `bounce` (told apart by `type`); captured and released (sandbox) keep
our own names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mailrelay.core.status import EVENT_NAMES

# `type` of a bounce, as SendGrid's "bounce" / "blocked", plus ours for a message that expired.
_BOUNCE_TYPES = {"bounced": "bounce", "expired": "expired", "bounced-by-operator": "bounce"}
# RFC 3463 enhanced status code, after an optional reply code: "550 5.1.1 ...", "4.4.7 ..."
_STATUS = re.compile(r"^(?:(\d)\d\d[ -])?\s*([245]\.\d{1,3}\.\d{1,3})\b")
_CODE = re.compile(r"^([245])\d\d\b")

# Fields we set: unique_args never overwrite them (SendGrid reserves these names too).
RESERVED = frozenset({
    "email", "timestamp", "event", "smtp-id", "sg_event_id", "sg_message_id", "mailrelay_message_id",
    "mailrelay_event", "category", "attempt", "response", "reason", "status", "type", "mx_host", "tls", "ip",
    "useragent", "url", "asm_group_id",
})


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event with what the payload needs of its message (from one joined query)."""

    id: int
    account_id: int | None
    message_id: str | None
    recipient: str | None
    type: str
    detail: str
    at: float
    attempt: int | None = None
    reply: str | None = None
    mx_host: str | None = None
    smtp_id: str | None = None  # the message's Message-ID
    tags: str | None = None  # messages.tags, JSON


def status_of(reply: str, *, default: str = "5.0.0") -> str:
    """The enhanced status code in a reply ("550 5.1.1 no such user" -> "5.1.1"), else one
    made from the reply code's class, else `default`."""
    m = _STATUS.match(reply)
    if m:
        return m.group(2)
    m = _CODE.match(reply)
    return f"{m.group(1)}.0.0" if m else default


def _tags(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except ValueError:
        return {}
    return tags if isinstance(tags, dict) else {}


def to_payload(ev: EventRow) -> dict[str, Any]:
    """The posted object for one event (whose type is in core.status.POSTED_EVENTS)."""
    tags = _tags(ev.tags)
    x_message_id = tags.get("x_message_id")
    out: dict[str, Any] = {
        "email": ev.recipient,
        "timestamp": int(ev.at),
        "event": EVENT_NAMES.get(ev.type, ev.type),
        "sg_event_id": f"mr-{ev.id}",
        # SendGrid's sg_message_id starts with the X-Message-Id its API answered (mail sent
        # through our API has one); then comes the message's own id.
        "sg_message_id": f"{x_message_id}.{ev.message_id}" if isinstance(x_message_id, str) and x_message_id
        else ev.message_id,
        "mailrelay_message_id": ev.message_id,
        "mailrelay_event": ev.type,
    }
    if ev.smtp_id:
        out["smtp-id"] = ev.smtp_id
    if ev.attempt is not None:
        out["attempt"] = str(ev.attempt)  # a string, as SendGrid sends it
    if ev.mx_host:
        out["mx_host"] = ev.mx_host
    reply = ev.reply or ev.detail
    if ev.type in ("delivered", "deferred", "captured", "released") or ev.type.startswith("inbound-"):
        if reply:
            out["response"] = reply
    elif ev.type in _BOUNCE_TYPES:
        out["type"] = _BOUNCE_TYPES[ev.type]
        out["reason"] = reply
        out["status"] = status_of(reply)
    elif ev.type == "dropped":
        out["reason"] = ev.detail
        out["status"] = "5.0.0"
    categories = tags.get("category")
    if isinstance(categories, list) and categories:
        out["category"] = categories
    args = tags.get("unique_args")
    if isinstance(args, dict):
        # SendGrid puts custom arguments at the top level of each event.
        for key, value in args.items():
            if key not in RESERVED:
                out[key] = value
    return out


def encode_batch(rows: list[EventRow]) -> bytes:
    """A POST body: the JSON array of the events, oldest first, compact UTF-8."""
    return json.dumps([to_payload(r) for r in rows], separators=(",", ":"), ensure_ascii=False).encode()
