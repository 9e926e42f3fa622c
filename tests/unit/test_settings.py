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
    redact_url,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


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


@pytest.mark.parametrize("url", [
    "mysql://app:s3cret-pw@db.internal/mail",
    "mysql+pymysql://app@db.internal/mail",
    "postgresql+psycopg2://app@db.internal/mail",
    "mssql://db.internal/mail",
    "db.internal/mail",
])
def test_storage_url_other_than_sqlite_or_postgresql_is_refused_when_parsed(
        tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'[storage]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == "storage.url"
    assert err.value.expected.startswith(
        "only sqlite and postgresql are supported (sqlite:///path or postgresql://user@host/db)")
    assert "s3cret-pw" not in str(err.value)


@pytest.mark.parametrize("url", [
    "sqlite:///data/mailrelay.db", "sqlite:////var/lib/mailrelay/mailrelay.db", "sqlite://",
    "postgresql://app@db.internal/mail", "postgres://app:pw@db.internal:5433/mail",
    "postgresql+psycopg://app@127.0.0.1/mail?sslmode=require",
])
def test_sqlite_and_postgresql_urls_are_accepted(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'[storage]\nurl = "{url}"\n')
    assert load_settings(path, env={}).storage.url == url


def test_unparsable_storage_url_is_refused_without_its_password(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nurl = "postgresql://app:s3cret-pw@db:notaport/mail"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == "storage.url"
    assert "not a usable database URL" in err.value.expected
    assert "s3cret-pw" not in str(err.value)
    env = {"MAILRELAY_STORAGE_URL": "mysql://app:s3cret-pw@db/mail"}
    with pytest.raises(ConfigError) as err:
        load_settings(None, env=env)
    assert "only sqlite and postgresql" in str(err.value) and "s3cret-pw" not in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cret@db/mail", "postgresql://app:***@db/mail"),
    ("postgresql://app:s3/cr@et@db:5432/mail", "postgresql://app:***@db:5432/mail"),
    ("postgresql://app@db/mail?password=s3cret&sslmode=require",
     "postgresql://app@db/mail?password=***&sslmode=require"),
    ("postgresql://app@db/mail", "postgresql://app@db/mail"),
    ("sqlite:///data/mailrelay.db", "sqlite:///data/mailrelay.db"),
    # SQLAlchemy reads everything up to the first @ as the password, "?" and "#" included.
    ("postgresql://app:p?ss@db/mail", "postgresql://app:***@db/mail"),
    ("postgresql://app:p#ss@db/mail?sslmode=require", "postgresql://app:***@db/mail?sslmode=require"),
    ("postgresql://app:p?s@s@db/mail", "postgresql://app:***@db/mail"),
    # An unescaped @ in the password: SQLAlchemy would show its rest as the host; hidden whole.
    ("postgresql://app:p@ss@db/mail", "postgresql://app:***@db/mail"),
    ("postgresql://app:a@b/c@db/mail", "postgresql://app:***@db/mail"),
    ("postgresql://app:p:ss@db:5432/mail", "postgresql://app:***@db:5432/mail"),
    ("postgresql://app:p%40ss@db/mail", "postgresql://app:***@db/mail"),
    ("postgresql://app:s3cret@db/mail?password=again", "postgresql://app:***@db/mail?password=***"),
    ("postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dt_1",
     "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dt_1"),
    # Not parsable (a port that is not a number): hidden from the first ":" to the last "@".
    ("postgresql://app:p?ss@db:notaport/mail", "postgresql://app:***@db:notaport/mail"),
    ("postgresql://app:p@ss@db:notaport/mail?password=x", "postgresql://app:***@db:notaport/mail?password=***"),
    ("postgresql://app@db:notaport/mail", "postgresql://app@db:notaport/mail"),
    ("not a url", "not a url"),
])
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_refused_storage_url_never_shows_a_password_with_a_question_mark(tmp_path: Path) -> None:
    for url in ("mysql://app:p?ss-w0rd@db/mail", "postgresql://app:p?ss-w0rd@db:notaport/mail"):
        with pytest.raises(ConfigError) as err:
            load_settings(write(tmp_path, f'[storage]\nurl = "{url}"\n'), env={})
        assert err.value.key == "storage.url"
        assert "ss-w0rd" not in str(err.value), str(err.value)


def test_storage_space_and_connect_timeout_settings(tmp_path: Path) -> None:
    s = load_settings(None, env={})
    assert s.storage.min_free == 64 * 1024 * 1024
    assert s.storage.min_free >= 1.5 * s.smtp.max_message_size  # Postfix's queue_minfree advice
    assert s.storage.connect_timeout == 10.0
    path = write(tmp_path, "[storage]\nmin_free = 0\nconnect_timeout = 3\n")
    s = load_settings(path, env={})
    assert (s.storage.min_free, s.storage.connect_timeout) == (0, 3.0)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[storage]\nconnect_timeout = 1\n"), env={})
    assert err.value.key == "storage.connect_timeout" and "at least 2" in err.value.expected


def test_the_engine_and_the_directory_default_to_the_settings_defaults() -> None:
    # One home for each default (settings); the constructors used without settings follow it.
    import inspect

    from mailrelay.inbound.directory import InboundDirectory
    from mailrelay.settings import InboundSettings, StorageSettings
    from mailrelay.store.db import create_engine

    timeout = inspect.signature(create_engine).parameters["connect_timeout"].default
    delimiter = inspect.signature(InboundDirectory).parameters["recipient_delimiter"].default
    assert (timeout, delimiter) == (StorageSettings().connect_timeout, InboundSettings().recipient_delimiter)
