"""Alembic environment: runs migrations on the connection `store.migrate` passes in.

Online mode only, on a caller-owned connection in `config.attributes["connection"]`; the
caller commits. Offline SQL generation is not supported: mailrelay migrates on start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from mailrelay.store.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError("run migrations through mailrelay.store.migrate.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables when a revision needs it.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
