"""Delivery: recipient leases, attempts, events, suppressions, sender domains.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on SQLite too, no table rebuild.
    op.add_column("recipients", sa.Column("lease_owner", sa.String(64), nullable=True))
    op.add_column("recipients", sa.Column("lease_until", sa.Float, nullable=True))
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("recipient_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("mx_host", sa.String(255), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("tls", sa.String(160), nullable=True),
        sa.Column("reply", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["recipient_id"], ["recipients.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_attempts_message_id", "attempts", ["message_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, nullable=True),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_events_message_id", "events", ["message_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("account_id", "address", name="uq_suppressions_account_address"),
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("rsa_private_key", sa.Text, nullable=True),
        sa.Column("ed25519_private_key", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_domains_account_id", "domains", ["account_id"])


def downgrade() -> None:
    op.drop_table("domains")
    op.drop_table("suppressions")
    op.drop_table("events")
    op.drop_table("attempts")
    op.drop_column("recipients", "lease_until")
    op.drop_column("recipients", "lease_owner")
