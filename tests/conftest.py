"""Fixtures shared by every test: a database per test on SQLite and PostgreSQL.

`db_url` runs a test twice: on a fresh SQLite file, and on PostgreSQL in a schema of its own
(`t_<hex>`, dropped afterwards). The schema is chosen through the URL itself
(`?options=-csearch_path%3D<schema>`, a libpq option psycopg passes on), so any process given
the URL - the CLI in a subprocess included - lands in the same schema, alembic_version too.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from mailrelay.accounts.passwords import make_hasher
from mailrelay.store import migrate
from mailrelay.store.db import create_engine

pytest_plugins = ["tests.support.fixtures"]

PG_URL = os.environ.get("MAILRELAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("MAILRELAY_TEST_REQUIRE_PG") == "1"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An engine on the PostgreSQL test database, or skip (fail in CI) when it is down."""
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        message = f"PostgreSQL not reachable at 127.0.0.1:5432: {reason}"
        if REQUIRE_PG:
            pytest.fail(message + " (MAILRELAY_TEST_REQUIRE_PG=1)")
        pytest.skip(message)
    yield engine
    engine.dispose()


def schema_url(base: str, schema: str) -> str:
    """`base` with every connection's search_path set to `schema` (and nothing else)."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'mailrelay.db'}"
        return
    admin: sa.Engine = request.getfixturevalue("pg_admin")
    schema = f"t_{secrets.token_hex(6)}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(PG_URL, schema)
    finally:
        _drop_schema(admin, schema)


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    # A connection a test forgot to close would block the drop forever; fail instead. A
    # process the test killed may still be finishing a write (a delivery worker handing its
    # leases back): a deadlock with it is retried, not a failure of the test.
    for attempt in range(3):
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            return
        except sa.exc.OperationalError as exc:
            if attempt == 2 or "deadlock" not in str(exc.orig):
                raise
            time.sleep(1.0)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine on the test database."""
    eng = create_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def fast_hasher() -> PasswordHasher:
    return make_hasher(fast=True)


@pytest.fixture
def add_message(engine: sa.Engine) -> Callable[..., str]:
    """Insert a spooled message directly (as the spool writer would); returns its queue id.
    `inline`: its content inside the `messages` row, uncompressed, as written before migration 0016."""
    from mailrelay.store import bodies
    from mailrelay.store.schema import accounts, message_bodies, messages, recipients

    def add(queue_id: str, *, account: str = "alice", created_at: float = 1_700_000_000.0,
            mail_from: str = "sender@example.org", mail_params: str = '{"SIZE": "120"}',
            rcpts: Sequence[tuple[str, str]] = (("rcpt@example.net", "queued"),),
            trace: bytes = b"Received: from client.test by mx.test\r\n",
            body: bytes = b"Subject: hello\r\nFrom: sender@example.org\r\n\r\nthe body\r\n",
            inline: bool = False) -> str:
        with engine.begin() as conn:
            account_id = conn.execute(sa.select(accounts.c.id)
                                      .where(accounts.c.name == account)).scalar()
            if account_id is None:
                account_id = conn.execute(
                    accounts.insert().values(name=account, password_hash="$argon2id$x",
                                             created_at=created_at, updated_at=created_at)
                    .returning(accounts.c.id)).scalar_one()
            conn.execute(messages.insert().values(
                id=queue_id, account_id=account_id, mail_from=mail_from, mail_params=mail_params,
                client_ip="192.0.2.7", helo="client.test", auth_user=account,
                tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384", listener="submission",
                size=len(trace) + len(body), trace_headers=trace if inline else b"", body=body if inline else b"",
                created_at=created_at))
            if not inline:
                conn.execute(message_bodies.insert().values(bodies.row(queue_id, trace, body)))
            for address, status in rcpts:
                conn.execute(recipients.insert().values(
                    message_id=queue_id, address=address, domain=address.rpartition("@")[2],
                    params='{"NOTIFY": "FAILURE"}', status=status, updated_at=created_at))
        return queue_id

    return add
