"""DKIM key rotation: a domain's next key (made, published, not yet signing) and the selectors
of the key it replaced (their DNS records may be removed a few days after).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("domains", sa.Column("next_selector", sa.String(63), nullable=True))
    op.add_column("domains", sa.Column("next_rsa_private_key", sa.Text, nullable=True))
    op.add_column("domains", sa.Column("next_ed25519_private_key", sa.Text, nullable=True))
    op.add_column("domains", sa.Column("rotation_started_at", sa.Float, nullable=True))
    op.add_column("domains", sa.Column("previous_selectors", sa.String(127), nullable=True))
    op.add_column("domains", sa.Column("retired_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        for name in ("retired_at", "previous_selectors", "rotation_started_at", "next_ed25519_private_key",
                     "next_rsa_private_key", "next_selector"):
            batch.drop_column(name)
