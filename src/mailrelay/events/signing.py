"""Signing webhook POSTs, so receivers can tell them from forgeries and replays. Two schemes,
side by side on the same POST:

- ours: HMAC-SHA256 under the account's webhook secret over `<unix timestamp>.<body>`, in
  `X-Mailrelay-Signature` / `X-Mailrelay-Timestamp` (docs/webhooks.md);
- SendGrid's (signed event webhook, when the account turned it on): ECDSA P-256 with SHA-256
  over `<unix timestamp><body>`, the DER signature base64 in
  `X-Twilio-Email-Event-Webhook-Signature`, the timestamp in
  `X-Twilio-Email-Event-Webhook-Timestamp`. The receiver holds the public key as SendGrid shows
  it (base64 DER SubjectPublicKeyInfo, one line), so the `sendgrid` library's
  `EventWebhook(public_key).verify_signature(body, signature, timestamp)` works unchanged.

Security: in both the timestamp is signed too, so a receiver that rejects old timestamps (5
minutes) cannot be fed a captured POST again later. The ECDSA private key (PKCS#8 PEM) is kept
in accounts.webhook_signing_key and never leaves the server; only its public half is shown.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Mailrelay-Signature"
TIMESTAMP_HEADER = "X-Mailrelay-Timestamp"
VERSION = "v1"

# SendGrid's header names (sendgrid.helpers.eventwebhook.EventWebhookHeader).
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


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


# -- SendGrid's scheme: ECDSA P-256 / SHA-256 ---------------------------------------------------


def new_signing_key() -> str:
    """A new P-256 private key, PKCS#8 PEM (what accounts.webhook_signing_key holds)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@functools.lru_cache(maxsize=256)
def _private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the webhook signing key is not an ECDSA P-256 key")
    return key


def public_key(pem: str) -> str:
    """The public half as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo, one line."""
    der = _private_key(pem).public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sign_ecdsa(pem: str, timestamp: int, body: bytes) -> str:
    """SendGrid's signature header value: base64 of the DER ECDSA signature of timestamp + body."""
    signature = _private_key(pem).sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def headers(timestamp: int, body: bytes, *, secret: str | None, signing_key: str | None) -> dict[str, str]:
    """The signature headers of one POST: ours when there is a secret, SendGrid's when there is a
    signing key (both may be present)."""
    out: dict[str, str] = {}
    if secret:
        out[TIMESTAMP_HEADER] = str(timestamp)
        out[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    if signing_key:
        out[SENDGRID_TIMESTAMP_HEADER] = str(timestamp)
        out[SENDGRID_SIGNATURE_HEADER] = sign_ecdsa(signing_key, timestamp, body)
    return out
