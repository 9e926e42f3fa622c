"""SendGrid's event webhook signature, checked with SendGrid's own verifier (sendgrid library)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from mailrelay.events import signing

BODY = '[{"email":"é@example.com","event":"processed","timestamp":1700000000}]'.encode()


def test_header_names_are_sendgrids() -> None:
    assert signing.SENDGRID_SIGNATURE_HEADER == EventWebhookHeader.SIGNATURE
    assert signing.SENDGRID_TIMESTAMP_HEADER == EventWebhookHeader.TIMESTAMP


def test_signature_verifies_with_sendgrids_event_webhook_helper() -> None:
    pem = signing.new_signing_key()
    public = signing.public_key(pem)
    assert "\n" not in public and not public.startswith("-----")
    headers = signing.headers(1700000123, BODY, secret=None, signing_key=pem)
    assert set(headers) == {signing.SENDGRID_SIGNATURE_HEADER, signing.SENDGRID_TIMESTAMP_HEADER}
    verifier = EventWebhook(public)
    sig, ts = headers[signing.SENDGRID_SIGNATURE_HEADER], headers[signing.SENDGRID_TIMESTAMP_HEADER]
    assert ts == "1700000123"
    assert verifier.verify_signature(BODY.decode(), sig, ts) is True
    assert verifier.verify_signature(BODY.decode().replace("processed", "delivered"), sig, ts) is False
    assert verifier.verify_signature(BODY.decode(), sig, "1700000124") is False, "the timestamp is signed"
    other = EventWebhook(signing.public_key(signing.new_signing_key()))
    assert other.verify_signature(BODY.decode(), sig, ts) is False, "another account's key does not verify"


def test_public_key_is_base64_der_subject_public_key_info() -> None:
    pem = signing.new_signing_key()
    loaded = serialization.load_der_public_key(base64.b64decode(signing.public_key(pem)))
    assert isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1)
    assert signing.new_signing_key() != pem, "each key pair is new"


def test_both_schemes_side_by_side_and_ours_unchanged() -> None:
    pem = signing.new_signing_key()
    headers = signing.headers(1700000000, BODY, secret="s3cret", signing_key=pem)
    assert headers[signing.SIGNATURE_HEADER] == signing.sign("s3cret", 1700000000, BODY)
    assert signing.verify("s3cret", headers[signing.TIMESTAMP_HEADER], BODY, headers[signing.SIGNATURE_HEADER],
                          now=1700000000)
    assert signing.headers(1, BODY, secret="s3cret", signing_key=None).keys() == {
        signing.SIGNATURE_HEADER, signing.TIMESTAMP_HEADER}


def test_a_key_that_is_not_p256_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="P-256"):
        signing.sign_ecdsa(other, 1, BODY)
