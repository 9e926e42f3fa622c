"""`[storage]`: the database URL, its checks, and the redaction every message naming it uses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailrelay.settings.convert import ConfigError


@dataclass(frozen=True, slots=True)
class StorageSettings:
    url: str = ""  # empty: sqlite:///<data_dir>/mailrelay.db
    group_commit_max: int = 512
    # MAIL is answered 452 4.3.1 when the SQLite database's file system has less than this
    # many bytes free, plus the SIZE= declared (Postfix's queue_minfree). 64 MiB: twice the
    # default 30 MiB smtp.max_message_size (Postfix asks for at least 1.5 times; a message
    # sits in SQLite's WAL and then in the database file, and outcomes still need room).
    min_free: int = 67_108_864
    connect_timeout: float = 10.0  # seconds to reach PostgreSQL (psycopg's own default: 130)


# Schemes (and drivers) mailrelay ships: SQLite, and PostgreSQL through psycopg 3.
_STORAGE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def redact_url(url: str) -> str:
    """`url` with its password shown as ***: for every message and log line that names it.

    The password is what SQLAlchemy will send, whatever it contains ("?", "#", ":"), so
    SQLAlchemy's own parser finds it. An unescaped "@" in it, which SQLAlchemy would split
    off into the host, or a URL it cannot parse, is hidden from the first ":" after "//" up
    to the last "@": too much rather than too little.
    """
    from sqlalchemy.engine import make_url  # here: settings alone need not load SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _redact_greedy(url)
    if parsed.password is not None and url.count("@") > 1:
        return _redact_greedy(url)
    return _QUERY_PASSWORD.sub(r"\1***", parsed.render_as_string(hide_password=True))


def _redact_greedy(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    colon, at = rest.find(":"), rest.rfind("@")
    if sep and 0 <= colon < at:
        rest = f"{rest[:colon]}:***{rest[at:]}"
    return _QUERY_PASSWORD.sub(r"\1***", scheme + sep + rest)


def check_storage(src: str, storage: StorageSettings) -> None:
    """A URL mailrelay can use (scheme and syntax) and a connect timeout libpq honours."""
    url = storage.url
    if url:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in _STORAGE_SCHEMES:
            raise ConfigError(src, "storage.url", "only sqlite and postgresql are supported "
                              f"(sqlite:///path or postgresql://user@host/db), got {redact_url(url)!r}")
        from sqlalchemy.engine import make_url  # here: settings alone need not load SQLAlchemy
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
            reason = str(exc).replace(url, redact_url(url))
            raise ConfigError(src, "storage.url", f"not a usable database URL ({reason}), got "
                              f"{redact_url(url)!r}; expected sqlite:///PATH or "
                              "postgresql://USER@HOST:PORT/DB") from None
    if storage.connect_timeout < 2:
        # libpq and psycopg take whole seconds and treat anything below 2 as 2.
        raise ConfigError(src, "storage.connect_timeout", "expected at least 2 seconds")
