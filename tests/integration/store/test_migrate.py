"""Migrations: from empty to head, idempotent, equal to store/schema.py, isolated per test."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mailrelay.events import activity
from mailrelay.store import bodies, migrate
from mailrelay.store.db import StorageError, create_engine
from mailrelay.store.schema import message_bodies, metadata

TABLES = {"accounts", "api_keys", "messages", "recipients", "attempts", "events", "suppressions", "domains",
          "usage", "addresses", "auth_failures", "nodes", "asm_groups", "asm_suppressions", "templates",
          "template_versions", "mail_batches", "web_sessions", "webhook_posts",
          "message_categories", "message_bodies", "send_rates", "alembic_version"}


def migrate_to(engine: sa.Engine, revision: str, step: str = "upgrade") -> None:
    """Run alembic's upgrade (or downgrade) of `engine` to `revision`, to test one migration's data."""
    from alembic import command
    from alembic.config import Config

    from mailrelay.store.db import MIGRATIONS_DIR

    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, revision)
        conn.commit()


def test_upgrade_from_empty_to_head_then_no_op(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision() == "0016"
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO accounts (name, password_hash, created_at, "
                                 "updated_at) VALUES ('keep', 'h', 1, 1)"))
        migrate.upgrade(engine)  # second run: nothing recreated, nothing lost
        assert migrate.current_revision(engine) == "0016"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name, plan, status FROM accounts")).all() == [
                ("keep", "free", "active")]
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_head_constant_matches_the_revision_files() -> None:
    # migrate.HEAD_REVISION lets a CLI command skip importing alembic; a new revision must
    # update it, or databases would stop one revision short.
    assert migrate.head_revision() == migrate.script_head()
    assert migrate.known_revisions() == {"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009",
                                         "0010", "0011", "0012", "0013", "0014", "0015", "0016"}


def test_migrated_database_equals_schema_py(engine: sa.Engine) -> None:
    # SQLAlchemy cannot reflect SQLite's expression indexes (lower(address), substr(subject)),
    # so autogenerate skips them there, saying so; their names are checked from sqlite_master.
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index")
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        names = set(sa.inspect(conn).get_table_names())
        indexes = {ix["name"] for t in metadata.tables for ix in sa.inspect(conn).get_indexes(t)}
        if engine.dialect.name == "sqlite":
            indexes |= set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
    assert diff == []
    assert names == TABLES
    assert {ix.name for t in metadata.tables.values() for ix in t.indexes} <= indexes
    assert {"ix_api_keys_account_id", "ix_messages_activity", "ix_messages_created_at",
            "ix_recipients_message_id", "ix_recipients_status_next"} <= indexes


def test_concurrent_upgrades_on_an_empty_database_both_succeed(db_url: str) -> None:
    engines = [create_engine(db_url) for _ in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(engine: sa.Engine) -> None:
        try:
            barrier.wait()
            migrate.upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        assert migrate.current_revision(engines[0]) == "0016"
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_tables_land_in_the_test_schema(engine: sa.Engine, db_url: str) -> None:
    assert engine.dialect.name == "postgresql"
    schema = db_url.rsplit("%3D", 1)[1]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_schema()")).scalar() == schema
        rows = conn.execute(sa.text(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name IN ('accounts', 'alembic_version')")).all()
    assert {r.table_name for r in rows if r.table_schema == schema} == {"accounts",
                                                                         "alembic_version"}
    assert not [r for r in rows if r.table_schema == "public"]  # nothing leaked into public


def test_newer_database_revision_is_refused_clearly(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match=r"revision '9999'.*newer version"):
        migrate.upgrade(engine)


def test_unreachable_postgresql_is_a_storage_error_naming_host_and_key() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(StorageError) as info:
            migrate.upgrade(engine)
    finally:
        engine.dispose()
    message = str(info.value)
    assert message.startswith("cannot connect to postgresql at 127.0.0.1:1: ")
    assert message.endswith("check storage.url")
    assert "\n" not in message


def test_unopenable_sqlite_file_is_a_storage_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}")  # a directory, not a file
    try:
        with pytest.raises(StorageError, match=r"cannot open sqlite database .*check storage.url"):
            migrate.upgrade(engine)
    finally:
        engine.dispose()


def test_0006_gives_existing_api_keys_full_access_and_downgrades(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrate_to(engine, "0005")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO accounts (id, name, password_hash, created_at, "
                                 "updated_at) VALUES (7, 'keep', 'h', 1, 1)"))
            conn.execute(sa.text("INSERT INTO api_keys (id, account_id, label, secret_hash, "
                                 "created_at) VALUES ('OldKeyId12345678', 7, 'ci', 'h', 1)"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id, label, scopes FROM api_keys")).all() == [
                ("OldKeyId12345678", "ci", None)]
        migrate_to(engine, "0005", "downgrade")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
            assert "scopes" not in columns and "label" in columns
            assert conn.execute(sa.text("SELECT id FROM api_keys")).scalars().all() == [
                "OldKeyId12345678"]
    finally:
        engine.dispose()


def test_0007_keeps_every_row_and_counts_existing_sender_domains_as_verified(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrate_to(engine, "0006")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO accounts (id, name, password_hash, created_at, updated_at) "
                                 "VALUES (7, 'keep', 'h', 1, 1)"))
            conn.execute(sa.text("INSERT INTO api_keys (id, account_id, label, secret_hash, created_at) "
                                 "VALUES ('Kept', 7, 'ci', 'h', 1)"))
            conn.execute(sa.text("INSERT INTO domains (account_id, name, selector, created_at) "
                                 "VALUES (7, 'shop.example', 's1', 5)"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id FROM api_keys")).scalars().all() == ["Kept"]
            assert conn.execute(sa.text("SELECT name, verified_at FROM domains")).all() == [("shop.example", 5.0)]
            assert conn.execute(sa.text("SELECT webhook_enabled FROM accounts")).scalar() in (True, 1)
    finally:
        engine.dispose()


def test_migration_0012_gives_old_recipients_their_account_and_old_messages_their_categories(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        migrate_to(engine, "0011")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO accounts (id, name, password_hash, created_at, updated_at) "
                                 "VALUES (7, 'keep', 'h', 1, 1)"))
            for qid, tags in (("A" * 16, '{"category": ["news", "news", "weekly"]}'), ("B" * 16, '{"category": "one"}'),
                              ("C" * 16, None), ("D" * 16, "not json")):
                conn.execute(sa.text(
                    "INSERT INTO messages (id, account_id, mail_from, client_ip, helo, listener, size, "
                    "trace_headers, body, created_at, tags) "
                    "VALUES (:id, 7, 'a@b.test', '127.0.0.1', 'h', 'api', 1, :b, :b, 1, :tags)"),
                    {"id": qid, "b": b"x", "tags": tags})
                conn.execute(sa.text("INSERT INTO recipients (message_id, address, domain, updated_at) "
                                     "VALUES (:id, 'r@c.test', 'c.test', 1)"), {"id": qid})
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert set(conn.execute(sa.text("SELECT account_id FROM recipients")).scalars()) == {7}
            assert sorted(conn.execute(sa.text("SELECT message_id, category FROM message_categories")).all()) == [
                ("A" * 16, "news"), ("A" * 16, "weekly"), ("B" * 16, "one")]
        found = activity.activity_page(engine, 7, activity.Search(equals={"category": "weekly"}), 50)
        assert [r["queue_id"] for r in found.rows] == ["A" * 16]
    finally:
        engine.dispose()


def test_0015_old_messages_keep_their_content_inline_and_a_downgrade_puts_new_ones_back(db_url: str) -> None:
    old_trace, old_body = b"Received: by old\r\n", b"Subject: old\r\n\r\n" + bytes(range(256)) + b"\r\n"
    new_trace, new_body = b"Received: by new\r\n", b"Subject: new\r\n\r\n" + b"\xe9t\xe9 " * 500 + b"\r\n"
    insert = sa.text("INSERT INTO messages (id, account_id, mail_from, client_ip, helo, listener, size, "
                     "trace_headers, body, created_at) VALUES (:id, 7, 'a@b.test', '127.0.0.1', 'h', 'smtp', "
                     ":size, :trace, :body, 1)")
    engine = create_engine(db_url)
    try:
        migrate_to(engine, "0015")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO accounts (id, name, password_hash, created_at, updated_at) "
                                 "VALUES (7, 'keep', 'h', 1, 1)"))
            conn.execute(insert, {"id": "OLD", "size": 1, "trace": old_trace, "body": old_body})
        migrate.upgrade(engine)
        with engine.begin() as conn:  # a message written since, as the spool writer writes it
            conn.execute(insert, {"id": "NEW", "size": 1, "trace": b"", "body": b""})
            conn.execute(message_bodies.insert().values(bodies.row("NEW", new_trace, new_body)))
        with engine.connect() as conn:
            assert bodies.load(conn, ["OLD", "NEW"]) == {"OLD": bodies.Content(old_trace, old_body),
                                                         "NEW": bodies.Content(new_trace, new_body)}
            assert len(conn.execute(sa.select(message_bodies.c.body)).scalar_one()) < len(new_body) / 10
        migrate_to(engine, "0015", "downgrade")
        with engine.connect() as conn:
            assert "message_bodies" not in sa.inspect(conn).get_table_names()
            assert sorted((r.id, bytes(r.trace_headers), bytes(r.body)) for r in conn.execute(
                sa.text("SELECT id, trace_headers, body FROM messages"))) == [
                ("NEW", new_trace, new_body), ("OLD", old_trace, old_body)]
    finally:
        engine.dispose()
