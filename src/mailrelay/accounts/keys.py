"""API key format: `MR.<id>.<secret>`, SendGrid-style (sent as AUTH user `apikey`).

The id (16 letters and digits, about 95 bits) is stored in clear for lookup; only an argon2id
hash of the secret (43 url-safe characters, 256 bits) is stored. Neither part contains a ".".
New ids hold no "-" or "_": an id is typed on command lines, where a leading "-" reads as an
option. Ids made before that (url-safe) still parse.

Security: handles key secrets; never log a full key, only its id.
"""

from __future__ import annotations

import re
import secrets
import string

KEY_PREFIX = "MR"
KEY_ID_LENGTH = 16
_ID_ALPHABET = string.ascii_letters + string.digits
KEY_SECRET_BYTES = 32  # 43 url-safe characters

_URLSAFE = r"[A-Za-z0-9_-]"
_KEY = re.compile(rf"{KEY_PREFIX}\.({_URLSAFE}{{8,32}})\.({_URLSAFE}{{16,128}})\Z")
_KEY_ID = re.compile(rf"{_URLSAFE}{{8,32}}\Z")


def new_key() -> tuple[str, str]:
    """A fresh (id, secret) pair."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    return key_id, secrets.token_urlsafe(KEY_SECRET_BYTES)


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
