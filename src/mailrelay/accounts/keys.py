"""API key format: `MR.<id>.<secret>`, SendGrid-style (sent as AUTH user `apikey`).

The id (16 url-safe characters) is stored in clear for lookup; only an argon2id hash of the
secret (43 url-safe characters, 256 bits) is stored. Neither part contains a ".".

Security: handles key secrets; never log a full key, only its id.
"""

from __future__ import annotations

import re
import secrets

KEY_PREFIX = "MR"
KEY_ID_BYTES = 12  # 16 url-safe characters
KEY_SECRET_BYTES = 32  # 43 url-safe characters

_URLSAFE = r"[A-Za-z0-9_-]"
_KEY = re.compile(rf"{KEY_PREFIX}\.({_URLSAFE}{{8,32}})\.({_URLSAFE}{{16,128}})\Z")
_KEY_ID = re.compile(rf"{_URLSAFE}{{8,32}}\Z")


def new_key() -> tuple[str, str]:
    """A fresh (id, secret) pair."""
    return secrets.token_urlsafe(KEY_ID_BYTES), secrets.token_urlsafe(KEY_SECRET_BYTES)


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}.{key_id}.{secret}"


def parse_key(text: str) -> tuple[str, str] | None:
    """`MR.<id>.<secret>` → (id, secret); None when `text` does not have that shape."""
    m = _KEY.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def key_id_of(text: str) -> str | None:
    """The id from a full key or a bare id; None when `text` is neither."""
    parsed = parse_key(text)
    if parsed is not None:
        return parsed[0]
    text = text.strip()
    return text if _KEY_ID.match(text) else None
