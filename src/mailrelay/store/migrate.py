"""Alembic migrations applied from code: `upgrade(engine)` on start and before CLI commands.

No alembic.ini is needed at runtime: the Config is built here, and the caller's connection is
handed to `migrations/env.py` through `config.attributes`. Concurrent upgrades (a server and a
CLI command starting together) are serialized by a lock held for the whole migration: an
advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mailrelay.store.db import MIGRATIONS_DIR, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions. Kept here so that the common case, a database
# already at head, is checked without importing alembic (a third of a CLI command's start-up).
# tests/integration/store/test_migrate.py fails when a new revision forgets to update it.
HEAD_REVISION = "0016"
VERSION_TABLE = "alembic_version"
_version_table = sa.table(VERSION_TABLE, sa.column("version_num", sa.String))

SQLITE_LOCKED_RETRY = 10.0  # seconds, as store.db's busy_timeout

# pg_advisory_xact_lock key: any constant shared by every mailrelay process ("mrmigr").
_PG_LOCK_KEY = 0x6D726D69677200


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    # Config values go through configparser interpolation: a "%" in the path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of mailrelay."""
    return HEAD_REVISION


def script_head() -> str | None:
    """The head according to the revision files themselves (what HEAD_REVISION must equal)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def _where(engine: sa.Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite database {url.database or ':memory:'}"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()} at {host}{port}"


def _reason(exc: BaseException) -> str:
    """The driver's own message, first line only (psycopg adds multi-line detail)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _connect_error(engine: sa.Engine, exc: BaseException) -> StorageError:
    if engine.dialect.name == "sqlite":
        return StorageError(f"cannot open {_where(engine)}: {_reason(exc)} — check storage.url "
                            "and that server.data_dir is writable")
    return StorageError(f"cannot connect to {_where(engine)}: {_reason(exc)} — check storage.url")


@contextlib.contextmanager
def _storage_errors(action: str, engine: sa.Engine) -> Iterator[None]:
    """Turn driver and alembic failures into one readable StorageError."""
    try:
        yield
    except StorageError:
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise StorageError(f"{action} failed on {_where(engine)}: {_reason(exc)}") from exc
    except Exception as exc:  # alembic raises CommandError, KeyError, ... for a bad history
        raise StorageError(
            f"{action} failed on {_where(engine)}: {type(exc).__name__}: {exc}"
        ) from exc


def _probe(engine: sa.Engine) -> None:
    """Open one connection first, so "cannot connect" is told apart from a failed migration."""
    deadline = time.monotonic() + SQLITE_LOCKED_RETRY
    while True:
        try:
            with engine.connect():
                return
        except sa.exc.OperationalError as exc:
            # Hazard: on a brand-new SQLite file, `PRAGMA journal_mode=WAL` (run on connect by
            # store.db) needs an exclusive lock and SQLite answers "locked" at once, without
            # waiting, while another process holds the write lock to create the tables.
            locked = engine.dialect.name == "sqlite" and "locked" in str(exc.orig)
            if not locked or time.monotonic() > deadline:
                raise _connect_error(engine, exc) from exc
            time.sleep(0.05)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise _connect_error(engine, exc) from exc


def _current(conn: sa.Connection) -> str | None:
    # What alembic's MigrationContext.get_current_revision() reads, without importing alembic.
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    versions = conn.execute(sa.select(_version_table.c.version_num)).scalars().all()
    if len(versions) > 1:
        raise StorageError(f"the database has several schema heads ({', '.join(versions)}); "
                           "mailrelay's migrations are linear, so it was changed by hand")
    return versions[0] if versions else None


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    _probe(engine)
    with _storage_errors("reading the schema version", engine), engine.connect() as conn:
        return _current(conn)


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the head revision; a no-op when it is already there."""
    head = head_revision()
    with _storage_errors("migration", engine):
        current = current_revision(engine)
        if current == head:
            return  # the common case, without taking a write lock
        if current is not None and current not in known_revisions():
            raise StorageError(
                f"{_where(engine)} has schema revision {current!r}, which this mailrelay "
                f"(newest revision {head!r}) does not know: it was written by a newer "
                "version; upgrade mailrelay or point storage.url at another database"
            )
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # pysqlite does not BEGIN before DDL; take the write lock ourselves so two
                # processes cannot both see an empty database and both create tables.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            if _current(conn) != head:  # another process may have migrated meanwhile
                from alembic import command

                cfg = _config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            conn.commit()
