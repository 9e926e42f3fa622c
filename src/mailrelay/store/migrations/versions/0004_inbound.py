"""Receiving: inbound domains and their addresses, message direction and check results.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("domains", sa.Column("inbound", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("domains", sa.Column("catch_all", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("domains", sa.Column("inbound_webhook", sa.Text, nullable=True))
    op.add_column("domains", sa.Column("inbound_raw", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("domains", sa.Column("dmarc_policy", sa.String(16), nullable=False, server_default="monitor"))
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("domain_id", sa.Integer, nullable=False),
        sa.Column("local_part", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("domain_id", "local_part", name="uq_addresses_domain_local"),
    )
    op.add_column("messages", sa.Column("direction", sa.String(8), nullable=False, server_default="out"))
    op.add_column("messages", sa.Column("auth", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "auth")
    op.drop_column("messages", "direction")
    op.drop_table("addresses")
    for col in ("dmarc_policy", "inbound_raw", "inbound_webhook", "catch_all", "inbound"):
        op.drop_column("domains", col)
