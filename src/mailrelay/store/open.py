"""The database named by the settings, opened and migrated: what the server and the CLI start with."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from mailrelay.settings import ConfigError, Settings, redact_url
from mailrelay.store import db, migrate

log = logging.getLogger("mailrelay")


def engine_for(settings: Settings) -> sa.Engine:
    """The engine for `storage.url`, not connected yet (nor migrated); a URL that cannot be
    used is a ConfigError naming storage.url."""
    url = settings.storage_url
    try:
        return db.create_engine(url, connect_timeout=settings.storage.connect_timeout)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        reason = str(exc).replace(url, redact_url(url))
        raise ConfigError(settings.source, "storage.url",
                          f"not a usable database URL ({reason}); expected sqlite:///PATH "
                          "or postgresql://USER@HOST:PORT/DB") from None


def open_storage(settings: Settings) -> sa.Engine:
    """The engine for `storage.url`, migrated to the current schema.

    A URL that cannot be used, or a PostgreSQL server that does not answer within
    `storage.connect_timeout`, is a ConfigError naming storage.url (one line, exit code 2).
    """
    engine = engine_for(settings)
    seconds = db.connect_timeout_seconds(settings.storage.connect_timeout)
    if engine.dialect.name == "postgresql":
        # Said before the wait, so that a slow or silent server is not a silent start.
        log.info("connecting to the database at %s (timeout %d s) ...", db.server_address(engine), seconds)
    try:
        migrate.upgrade(engine)
    except db.StorageError as exc:
        engine.dispose()
        if engine.dialect.name == "postgresql" and _timed_out(exc):
            reason = str(getattr(exc.__cause__, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(settings.source, "storage.url",
                              f"cannot reach the database at {db.server_address(engine)} within "
                              f"{seconds} s: {reason}; check that PostgreSQL is running and the URL"
                              ) from None
        raise
    except BaseException:
        engine.dispose()
        raise
    return engine


def _timed_out(exc: db.StorageError) -> bool:
    """The StorageError of migrate's first connect came from psycopg's connect timeout."""
    orig = getattr(exc.__cause__, "orig", None)
    if orig is None:
        return False
    from psycopg.errors import ConnectionTimeout  # here: SQLite users need not load psycopg

    return isinstance(orig, ConnectionTimeout)
