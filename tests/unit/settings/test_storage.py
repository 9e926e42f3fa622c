"""[storage]: which database URLs are accepted, passwords never shown, space and connect timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrelay.settings import ConfigError, load_settings, redact_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailrelay.toml"
    path.write_text(text)
    return path


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
