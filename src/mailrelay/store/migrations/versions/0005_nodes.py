"""Lease owners with heartbeats (a lease is handed back only when its owner is proven dead);
failed recipients waiting for their message's one bounce.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("local_id", sa.String(80), nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.add_column("recipients", sa.Column("dsn_pending", sa.Text, nullable=True))
    waiting = sa.text("dsn_pending IS NOT NULL")
    op.create_index("ix_recipients_dsn_pending", "recipients", ["message_id"], sqlite_where=waiting,
                    postgresql_where=waiting)


def downgrade() -> None:
    op.drop_index("ix_recipients_dsn_pending", "recipients")
    op.drop_column("recipients", "dsn_pending")
    op.drop_table("nodes")
