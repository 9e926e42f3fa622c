"""Settings: defaults, types, environment overrides, and that every key is documented."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from mailrelay.settings import (
    DEFAULT_CONFIG,
    SECTIONS,
    ConfigError,
    ListenerSettings,
    load_settings,
    parse_listen,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailrelay.toml"
    path.write_text(text)
    return path


def test_defaults_have_four_listeners_and_sendgrid_ports() -> None:
    s = load_settings(None, env={})
    ports = {ls.name: (parse_listen(ls.listen[0])[1], ls.tls, ls.require_auth) for ls in s.listeners}
    assert ports == {
        "smtp": (25, "starttls", False),
        "submission": (587, "starttls", True),
        "submissions": (465, "implicit", True),
        "alt": (2525, "starttls", False),
    }
    assert s.smtp.max_recipients == 1000
    assert s.storage_url.startswith("sqlite:///") and s.storage_url.endswith("data/mailrelay.db")
    assert [str(n) for n in s.http.metrics_networks] == ["127.0.0.0/8", "::1/128"]  # /metrics: loopback only


def test_written_default_config_loads(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, DEFAULT_CONFIG.format(hostname="mx.example.test")), env={})
    assert s.server.hostname == "mx.example.test"
    assert s.data_dir == (tmp_path / "data").resolve()


def test_settings_are_frozen() -> None:
    s = load_settings(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.smtp.max_recipients = 5  # type: ignore[misc]


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[smtp]\nmax_recipients = 10\n")
    env = {
        "MAILRELAY_SMTP_MAX_RECIPIENTS": "20",
        "MAILRELAY_AUTH_ALLOW_PLAINTEXT": "yes",
        "MAILRELAY_SUBMISSION_TRUSTED_NETWORKS": "10.0.0.0/8, 192.168.1.0/24",
        "MAILRELAY_SUBMISSION_TRUSTED_ACCOUNT": "backend",
        "MAILRELAY_LISTENER_ALT_LISTEN": '["127.0.0.1:2526", "[::1]:2526"]',
        "MAILRELAY_LISTENER_SMTP_ENABLED": "false",
    }
    s = load_settings(path, env=env)
    assert s.smtp.max_recipients == 20
    assert s.auth.allow_plaintext is True
    assert s.submission.trusted_networks == (ipaddress.ip_network("10.0.0.0/8"),
                                             ipaddress.ip_network("192.168.1.0/24"))
    alt = next(ls for ls in s.listeners if ls.name == "alt")
    assert alt.listen == ("127.0.0.1:2526", "[::1]:2526")
    assert parse_listen(alt.listen[1]) == ("::1", 2526)
    assert not next(ls for ls in s.listeners if ls.name == "smtp").enabled


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[smtp]\nbogus = 1\n", "smtp.bogus", "unknown key"),
        ("[nonsense]\na = 1\n", "nonsense", "unknown section"),
        ('[smtp]\nmax_recipients = "x"\n', "smtp.max_recipients", "an integer"),
        ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients", "at least 1"),
        ("[smtp]\nidle_timeout = true\n", "smtp.idle_timeout", "a number"),
        ('[smtp]\nbare_newline = "sometimes"\n', "smtp.bare_newline", '"reject"'),
        ('[submission]\ntrusted_networks = ["10.0.0.300/8"]\n', "submission.trusted_networks", "networks"),
        ('[submission]\ntrusted_networks = ["10.0.0.0/8"]\n', "submission.trusted_account", "required"),
        ('[http]\nmetrics_networks = ["127.0.0.0/33"]\n', "http.metrics_networks", "networks"),
        ('[http]\nmetrics_networks = "127.0.0.1"\n', "http.metrics_networks", "networks"),
        ('[listener.new]\ntls = "implicit"\n', "listener.new.listen", "required"),
        ('[listener.alt]\nlisten = ["example.com:25"]\n', "listener.alt.listen", "IP address"),
        ('[listener.alt]\nlisten = ["0.0.0.0:99999"]\n', "listener.alt.listen", "HOST:PORT"),
        ('[tls]\ncert_file = "a.pem"\n', "tls.cert_file", "both"),
        ("[smtp\n", "(file)", "not valid TOML"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == key
    assert fragment in err.value.expected
    assert str(path) in str(err.value)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"MAILRELAY_SMTP_MAX_RECIPIENTS": "lots"})
    assert "MAILRELAY_SMTP_MAX_RECIPIENTS" in str(err.value)
    assert err.value.key == "smtp.max_recipients"


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "nope.toml", env={})
    assert "not found" in str(err.value)


def test_every_key_is_documented() -> None:
    docs = DOCS.read_text()
    for section, cls in SECTIONS.items():
        assert f"## `[{section}]`" in docs, section
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in docs, f"{section}.{f.name} is missing from docs/configuration.md"
    for f in dataclasses.fields(ListenerSettings):
        if f.name != "name":
            assert f"| `{f.name}` |" in docs, f"listener.{f.name}"
