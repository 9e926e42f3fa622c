"""API key scopes: a JSON list of SendGrid scope names per key; NULL (every existing key) is
full access.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scopes", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "scopes")
