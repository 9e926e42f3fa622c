"""API key format: `SG.<id>.<secret>`, SendGrid's shape (sent as AUTH user `apikey`).

A new key is SendGrid's 69 characters: a 22-character id (letters and digits, about 131 bits)
and a 43-character secret (url-safe base64 of 256 bits), so clients that check SendGrid's key
length accept ours. The id is stored in clear for lookup; only an argon2id hash of the secret
is stored. Neither part contains a ".". New ids hold no "-" or "_": an id is typed on command
lines, where a leading "-" reads as an option. Keys made before are `MR.<id>.<secret>` (a
16-character id; the oldest ids are url-safe) and keep working: both prefixes parse.

Security: handles key secrets; never log a full key, only its id.
"""

from __future__ import annotations

import re
import secrets

from mailrelay.core.ids import random_id

KEY_PREFIX = "SG"
LEGACY_PREFIX = "MR"
KEY_ID_LENGTH = 22
KEY_SECRET_BYTES = 32  # 43 url-safe characters
KEY_SECRET_LENGTH = 43

_URLSAFE = r"[A-Za-z0-9_-]"
_KEY = re.compile(
    rf"{KEY_PREFIX}\.({_URLSAFE}{{{KEY_ID_LENGTH}}})\.({_URLSAFE}{{{KEY_SECRET_LENGTH}}})\Z"
    rf"|{LEGACY_PREFIX}\.({_URLSAFE}{{8,32}})\.({_URLSAFE}{{16,128}})\Z")
_KEY_ID = re.compile(rf"{_URLSAFE}{{8,32}}\Z")


def new_key() -> tuple[str, str]:
    """A fresh (id, secret) pair."""
    key_id = random_id(KEY_ID_LENGTH)
    return key_id, secrets.token_urlsafe(KEY_SECRET_BYTES)


def format_key(key_id: str, secret: str) -> str:
    """The full key a new (id, secret) pair is given out as: `SG.<id>.<secret>`."""
    return f"{KEY_PREFIX}.{key_id}.{secret}"


def parse_key(text: str) -> tuple[str, str] | None:
    """`SG.<id>.<secret>` (SendGrid's exact lengths) or `MR.<id>.<secret>` → (id, secret);
    None when `text` has neither shape."""
    m = _KEY.match(text.strip())
    if m is None:
        return None
    return (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))


def key_id_of(text: str) -> str | None:
    """The id from a full key or a bare id; None when `text` is neither."""
    parsed = parse_key(text)
    if parsed is not None:
        return parsed[0]
    text = text.strip()
    return text if _KEY_ID.match(text) else None
