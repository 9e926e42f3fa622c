from __future__ import annotations

import pytest

from mailrelay.delivery.providers import provider_of


@pytest.mark.parametrize(("host", "provider"), [
    ("aspmx.l.google.com", "google"),
    ("ALT1.ASPMX.L.GOOGLE.COM.", "google"),
    ("smtp.google.com", "google"),
    ("contoso-com.mail.protection.outlook.com", "microsoft"),
    ("mta7.am0.yahoodns.net", "yahoo"),
    ("mx01.mail.icloud.com", "apple"),
    ("mx.example.org", "other"),
    ("notgoogle.com", "other"),  # a suffix matches at a label boundary only
    ("google.com.evil.test", "other"),
    ("com", "other"),
    (None, "none"),
    ("", "none"),
])
def test_provider_of_an_mx_host(host: str | None, provider: str) -> None:
    assert provider_of(host) == provider
