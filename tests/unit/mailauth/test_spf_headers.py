"""Rendering SPF results into Authentication-Results and Received-SPF (pure, no DNS)."""

from __future__ import annotations

from mailrelay.mailauth.spf import SPFResult, authres_spf, received_spf


def test_authres_mailfrom_and_helo() -> None:
    assert authres_spf(SPFResult("pass", "example.com", "mailfrom", "")) == "spf=pass smtp.mailfrom=example.com"
    assert authres_spf(SPFResult("none", "mail.example.com", "helo", "")) == "spf=none smtp.helo=mail.example.com"


def test_authres_quotes_odd_domains() -> None:
    result = SPFResult("permerror", 'ex;ample"\r\n.com', "mailfrom", "")
    assert authres_spf(result) == 'spf=permerror smtp.mailfrom="ex;ample\\".com"'


def test_received_spf_field() -> None:
    result = SPFResult("fail", "example.com", "mailfrom", "127.0.0.3 matched '-all' of example.com")
    header = received_spf(result, ip="127.0.0.3", mail_from="alice@example.com", helo="mail.example.com",
                          receiver="mx.relay.test")
    assert header == (b"Received-SPF: fail (mx.relay.test: 127.0.0.3 matched '-all' of example.com) "
                      b'client-ip=127.0.0.3; envelope-from="alice@example.com"; helo=mail.example.com; '
                      b"receiver=mx.relay.test; identity=mailfrom\r\n")


def test_received_spf_cannot_be_used_to_inject_headers() -> None:
    result = SPFResult("temperror", "x.test", "helo", "DNS said (\r\nX-Evil: 1)")
    header = received_spf(result, ip="::1", mail_from="", helo="bad\r\nX-Evil: 1",
                          receiver="mx.relay.test")
    assert header.count(b"\r\n") == 1 and header.endswith(b"\r\n")
    assert b"(mx.relay.test: DNS said X-Evil: 1)" in header
    assert b'envelope-from=""' in header and b'helo="badX-Evil: 1"' in header
