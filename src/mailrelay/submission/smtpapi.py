"""What submission reads from a message's header: Message-ID and Subject for events, and
SendGrid's X-SMTPAPI header (category, unique_args), which is removed before the message is
stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Inspected:
    body: bytes  # the message as it will be stored (without X-SMTPAPI)
    message_id: str | None = None
    subject: str | None = None
    tags: dict[str, Any] | None = None  # {"category": [...], "unique_args": {...}}


def inspect(body: bytes) -> Inspected:
    return Inspected(body)
