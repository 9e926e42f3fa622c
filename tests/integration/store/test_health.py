"""What counts as the database being away (one outage line, work held) and what is one
statement's failure (retried on its own), from real driver errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg.errors
import pytest
import sqlalchemy as sa

from mailrelay.store.health import StorageUnavailable, is_unavailable


def _error(engine: sa.Engine, sql: str) -> BaseException:
    with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
        conn.exec_driver_sql(sql)
    return info.value


def test_a_database_file_that_cannot_be_opened_is_an_outage(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'db.sqlite'}")
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    assert is_unavailable(info.value)


def test_a_locked_sqlite_database_is_the_statements_failure(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        assert not is_unavailable(_error(engine, "INSERT INTO t VALUES (1)"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_postgresql_refusing_connections_is_an_outage() -> None:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    assert is_unavailable(info.value)


@pytest.mark.parametrize(("error", "outage"), [
    (psycopg.errors.DeadlockDetected, False),
    (psycopg.errors.SerializationFailure, False),
    (psycopg.errors.LockNotAvailable, False),
    (psycopg.errors.QueryCanceled, False),
    (psycopg.errors.AdminShutdown, True),
    (psycopg.errors.DiskFull, True),
    (psycopg.errors.TooManyConnections, True),
])
def test_postgresql_sqlstates(error: type[psycopg.Error], outage: bool) -> None:
    wrapped = sa.exc.OperationalError("UPDATE ...", {}, error("from the server"))
    assert is_unavailable(wrapped) is outage


def test_our_own_wrapper_and_other_errors() -> None:
    assert is_unavailable(StorageUnavailable("database away"))
    assert isinstance(StorageUnavailable("x"), ConnectionError)
    assert not is_unavailable(sa.exc.IntegrityError("INSERT ...", {}, Exception("duplicate key")))
    assert not is_unavailable(ValueError("a bug"))
