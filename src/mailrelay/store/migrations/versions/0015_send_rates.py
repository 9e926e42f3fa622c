"""The plans' per-minute rate, shared by every process and node (one row per account).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "send_rates",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("full_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("send_rates")
