"""API key scopes over real SMTP: only a key that may send (`mail.send`) logs in as `apikey`;
keys in the old `MR.` format still do."""

from __future__ import annotations

import smtplib

import pytest
from argon2 import PasswordHasher

from mailrelay.accounts import scopes
from mailrelay.store.schema import api_keys
from tests.integration.smtp.conftest import Node

MSG = b"From: bob@example.net\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nHello there.\r\n"


def _refused(node: Node, key: str) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        node.submission("apikey", key)
    assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.8")


def test_key_without_mail_send_cannot_log_in_over_smtp(node: Node) -> None:
    _, reader = node.app.accounts.create_key("bob", "stats", scopes=["stats.read",
                                                                     "suppression.read"])
    _refused(node, reader)
    assert node.stored() == []

    _, sender = node.app.accounts.create_key("bob", "send", scopes=["mail.send", "stats.read"])
    client = node.submission("apikey", sender)
    assert client.sendmail("bob@example.net", ["x@example.com"], MSG) == {}
    client.quit()
    [stored] = node.stored()
    assert stored["auth_user"] == "apikey"


def test_taking_mail_send_away_refuses_the_next_smtp_login(node: Node) -> None:
    bob = node.app.accounts.get("bob")
    assert bob is not None
    info, key = node.app.accounts.create_key("bob", "ci")  # full access
    node.submission("apikey", key).quit()
    node.app.accounts.update_key(bob.id, info.id, scopes=["templates.read"])
    _refused(node, key)
    node.app.accounts.update_key(bob.id, info.id, scopes=sorted(scopes.FULL_ACCESS))
    node.submission("apikey", key).quit()


def test_old_mr_key_still_logs_in_over_smtp(node: Node, fast_hasher: PasswordHasher) -> None:
    bob = node.app.accounts.get("bob")
    assert bob is not None
    key_id, secret = "OldKeyId12345678", "s3cr3t-old-secret_value-0123456789abcdefgh"
    with node.app.engine.begin() as conn:
        conn.execute(api_keys.insert().values(id=key_id, account_id=bob.id, label="old",
                                              secret_hash=fast_hasher.hash(secret),
                                              created_at=1.0))
    client = node.submission("apikey", f"MR.{key_id}.{secret}")
    assert client.sendmail("bob@example.net", ["x@example.com"], MSG) == {}
    client.quit()
    assert len(node.stored()) == 1
