"""What every non-serve command shares: the config file, the database, user errors."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import sqlalchemy as sa

from mailrelay.settings import ConfigError, Settings, load_settings, redact_url
from mailrelay.store import db, migrate

log = logging.getLogger("mailrelay")

CONFIG_ENV = "MAILRELAY_CONFIG"
DEFAULT_CONFIG_PATH = "mailrelay.toml"


class UsageError(Exception):
    """Bad input on the command line (unknown queue id, mismatched passwords): exit code 2."""


def row_limit(text: str) -> int:
    """An argparse type for --limit N: a whole number from 1 to what a database LIMIT takes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    if value > 2**31 - 1:  # past that the drivers raise OverflowError
        raise argparse.ArgumentTypeError(f"expected at most {2**31 - 1}, got {text[:20]}")
    return value


def resolve_config(args: argparse.Namespace) -> None:
    """Set `args.config_path` and `args.config_given` (named by -c or $MAILRELAY_CONFIG).

    `args.config` is left as typed (None without -c): `cli/serve.py` reads it itself.
    """
    if args.config is not None:
        args.config_path, args.config_given = args.config, True
    elif os.environ.get(CONFIG_ENV):
        args.config_path, args.config_given = os.environ[CONFIG_ENV], True
    else:
        args.config_path, args.config_given = DEFAULT_CONFIG_PATH, False


def load_config(args: argparse.Namespace) -> Settings:
    """A missing default file means built-in defaults; a file the user named must exist."""
    if not args.config_given and not Path(args.config_path).exists():
        return load_settings(None)
    return load_settings(args.config_path)


def open_storage(settings: Settings) -> sa.Engine:
    """The engine for `storage.url`, migrated to the current schema.

    A URL that cannot be used, or a PostgreSQL server that does not answer within
    `storage.connect_timeout`, is a ConfigError naming storage.url (one line, exit code 2).
    """
    url = settings.storage_url
    try:
        engine = db.create_engine(url, connect_timeout=settings.storage.connect_timeout)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        reason = str(exc).replace(url, redact_url(url))
        raise ConfigError(settings.source, "storage.url",
                          f"not a usable database URL ({reason}); expected sqlite:///PATH "
                          "or postgresql://USER@HOST:PORT/DB") from None
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


def open_from_args(args: argparse.Namespace) -> tuple[Settings, sa.Engine]:
    settings = load_config(args)
    return settings, open_storage(settings)
