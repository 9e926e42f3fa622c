"""Signing webhook POSTs, so receivers can tell them from forgeries and replays.

Security: the signature is HMAC-SHA256 under the account's webhook secret over
`<unix timestamp>.<body>`; the timestamp is signed too, so a receiver that rejects old
timestamps (docs/webhooks.md: 5 minutes) cannot be fed a captured POST again later.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "X-Mailrelay-Signature"
TIMESTAMP_HEADER = "X-Mailrelay-Timestamp"
VERSION = "v1"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: "v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>"."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does (and the tests): a fresh timestamp and a matching signature."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
