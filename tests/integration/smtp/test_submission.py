"""Submission end to end over real sockets: port modes, AUTH, API keys, storage, trace headers."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.integration.smtp.conftest import PASSWORD, Node

MSG = b"From: alice@example.net\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello there.\r\n"


def test_starttls_auth_plain_on_submission_stores_message(node: Node) -> None:
    client = node.smtp("submission")
    code, _caps = client.ehlo()
    assert code == 250
    assert client.has_extn("starttls")
    assert not client.has_extn("auth"), "AUTH must not be offered before TLS"
    for ext in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"):
        assert client.has_extn(ext), ext
    client.starttls(context=node.client_ssl)
    client.ehlo()
    assert not client.has_extn("starttls"), "STARTTLS must not be offered once TLS is on"
    assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
    client.user, client.password = "alice", PASSWORD
    assert client.auth("PLAIN", client.auth_plain)[0] == 235
    refused = client.sendmail("alice@example.net", ["bob@example.com", "carol@example.org"], MSG)
    assert refused == {}
    client.quit()
    [stored] = node.stored()
    assert stored["body"] == MSG, "the body is kept exactly as received"
    assert stored["mail_from"] == "alice@example.net"
    assert sorted(r["address"] for r in stored["recipients"]) == ["bob@example.com", "carol@example.org"]
    assert {r["status"] for r in stored["recipients"]} == {"queued"}
    assert stored["auth_user"] == "alice"
    assert stored["helo"] == "client.test"
    assert stored["client_ip"] == "127.0.0.1"
    assert stored["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert stored["tls_cipher"]
    assert stored["listener"] == "submission"
    trace = stored["trace_headers"].decode()
    assert trace.startswith("Received: from client.test ([127.0.0.1])")
    assert "with ESMTPSA id " + stored["id"] in trace
    assert f"(using {stored['tls_version']} with cipher {stored['tls_cipher']})" in trace
    assert f"Message-ID: <{stored['id']}@mx.mailrelay.test>" in trace
    assert "\nDate: " in trace
    assert stored["size"] == len(stored["trace_headers"]) + len(MSG)


def test_auth_login_and_queue_id_in_reply(node: Node) -> None:
    client = node.smtp("submission")
    client.starttls(context=node.client_ssl)
    client.ehlo()
    client.user, client.password = "alice", PASSWORD
    assert client.auth("LOGIN", client.auth_login)[0] == 235
    client.mail("alice@example.net")
    client.rcpt("bob@example.com")
    code, text = client.data(b"Subject: x\r\nMessage-ID: <given@example.net>\r\n"
                             b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n")
    assert code == 250
    assert text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.decode().rsplit(" ", 1)[1]
    [stored] = node.stored()
    assert stored["id"] == queue_id
    trace = stored["trace_headers"].decode()
    assert "Message-ID:" not in trace, "an existing Message-ID is kept, not duplicated"
    assert not any(line.startswith("Date:") for line in trace.split("\r\n")), "an existing Date is kept"
    assert "for <bob@example.com>; " in trace


def test_implicit_tls_port_465(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mailrelay")
    client = node.smtps("submissions")
    client.ehlo()
    assert not client.has_extn("starttls")
    assert "PLAIN" in client.esmtp_features["auth"]
    client.login("alice", PASSWORD)
    assert client.sendmail("alice@example.net", ["bob@example.com"], MSG) == {}
    client.quit()
    [stored] = node.stored()
    assert stored["listener"] == "submissions"
    assert "with ESMTPSA" in stored["trace_headers"].decode()
    assert f"{stored['id']}: queued from=<alice@example.net> nrcpt=1 size={stored['size']} account=alice" \
        in caplog.text


@pytest.mark.parametrize("listener", ["submission", "submissions"])
def test_auth_required_before_mail_on_587_and_465(node: Node, listener: str) -> None:
    if listener == "submission":
        client = node.smtp(listener)
        client.starttls(context=node.client_ssl)
    else:
        client = node.smtps(listener)
    client.ehlo()
    code, text = client.mail("alice@example.net")
    assert (code, text[:5]) == (530, b"5.7.0")
    client.quit()
    assert node.stored() == []


@pytest.mark.parametrize("listener", ["smtp", "alt"])
def test_authenticated_relay_on_25_and_2525(node: Node, listener: str) -> None:
    client = node.smtp(listener)
    client.starttls(context=node.client_ssl)
    client.login("alice", PASSWORD)
    assert client.sendmail("alice@example.net", ["bob@example.com"], MSG) == {}
    client.quit()
    assert len(node.stored()) == 1


def test_api_key_login_as_sendgrid_does(node: Node) -> None:
    _, key = node.app.accounts.create_key("bob", "ci")
    client = node.submission("apikey", key)
    assert client.sendmail("bob@example.net", ["x@example.com"], MSG) == {}
    client.quit()
    [stored] = node.stored()
    assert stored["auth_user"] == "apikey"
    bob = node.app.accounts.get("bob")
    assert bob is not None and stored["account_id"] == bob.id


def test_revoked_api_key_cannot_log_in(node: Node) -> None:
    info, key = node.app.accounts.create_key("bob")
    node.app.accounts.revoke_key(info.id)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        node.submission("apikey", key)
    assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.8")


def test_bad_password_is_535(node: Node) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        node.submission("alice", "wrong-password")
    assert err.value.smtp_code == 535
    assert err.value.smtp_error.startswith(b"5.7.8")


def test_unknown_user_is_535(node: Node) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        node.submission("mallory", PASSWORD)
    assert err.value.smtp_code == 535


def test_disabled_account_cannot_log_in_with_password_or_key(node: Node) -> None:
    _, key = node.app.accounts.create_key("alice")
    node.app.accounts.set_status("alice", "disabled")
    for user, secret in (("alice", PASSWORD), ("apikey", key)):
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            node.submission(user, secret)
        assert err.value.smtp_code == 535
    node.app.accounts.set_status("alice", "active")
    node.submission("alice", PASSWORD).quit()


def test_aiosmtplib_starttls_and_login(node: Node) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.net"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "via aiosmtplib"
    msg.set_content("héllo wörld")

    async def send() -> tuple[object, str]:
        return await aiosmtplib.send(msg, hostname="127.0.0.1", port=node.port("submission"),
                                     start_tls=True, tls_context=node.client_ssl,
                                     username="alice", password=PASSWORD, timeout=10)

    _, text = asyncio.run(send())
    assert "queued as" in text
    [stored] = node.stored()
    assert b"Subject: via aiosmtplib" in stored["body"]


def test_aiosmtplib_implicit_tls(node: Node) -> None:
    async def send() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=node.port("submissions"), use_tls=True,
                                 tls_context=node.client_ssl, timeout=10)
        async with client:
            await client.login("alice", PASSWORD)
            await client.sendmail("alice@example.net", ["a@example.com", "b@example.com"], MSG)

    asyncio.run(send())
    [stored] = node.stored()
    assert len(stored["recipients"]) == 2


def test_mail_and_rcpt_parameters_are_stored(node: Node) -> None:
    client = node.submission()
    client.ehlo()
    code, _ = client.mail("alice@example.net", ["SIZE=100", "BODY=8BITMIME"])
    assert code == 250
    assert client.rcpt("bob@example.com")[0] == 250
    assert client.data(MSG)[0] == 250
    client.quit()
    [stored] = node.stored()
    assert json.loads(stored["mail_params"]) == {"SIZE": "100", "BODY": "8BITMIME"}


def test_smtputf8_address_needs_the_parameter(node: Node) -> None:
    client = node.submission()
    client.ehlo()
    client.command_encoding = "utf-8"
    code, text = client.mail("jösé@example.net")
    assert (code, text[:5]) == (553, b"5.6.7")
    client.rset()
    assert client.mail("jösé@example.net", ["SMTPUTF8"])[0] == 250
    assert client.rcpt("ünïcode@exämple.com")[0] == 250
    assert client.data(MSG)[0] == 250
    client.quit()
    [stored] = node.stored()
    assert stored["mail_from"] == "jösé@example.net"
    assert "with UTF8SMTPSA" in stored["trace_headers"].decode()


def test_tls_below_1_2_is_refused(node: Node) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP_SSL("127.0.0.1", node.port("submissions"), context=ctx, timeout=5)
    # and the TLS 1.2 floor still lets a modern client in
    ctx12 = ssl.create_default_context()
    ctx12.check_hostname = False
    ctx12.verify_mode = ssl.CERT_NONE
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    client = smtplib.SMTP_SSL("127.0.0.1", node.port("submissions"), context=ctx12, timeout=5)
    assert client.ehlo()[0] == 250
    client.quit()
