"""The event webhook's last POSTs per account (events.postlog).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_posts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_webhook_posts_account_id", "webhook_posts", ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_posts_account_id", "webhook_posts")
    op.drop_table("webhook_posts")
