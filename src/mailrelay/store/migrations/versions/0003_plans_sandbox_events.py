"""Plans and usage, sandbox capture, richer events with the webhook outbox, X-SMTPAPI tags.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Every new column is nullable or has a server default: a plain ADD COLUMN on SQLite.
    op.add_column("accounts", sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("accounts", sa.Column("chaos", sa.Text, nullable=True))
    op.add_column("accounts", sa.Column("webhook_url", sa.Text, nullable=True))
    op.add_column("accounts", sa.Column("webhook_secret", sa.String(128), nullable=True))
    op.create_table(
        "usage",
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "period"),
    )
    op.add_column("messages", sa.Column("message_id_header", sa.String(998), nullable=True))
    op.add_column("messages", sa.Column("subject", sa.Text, nullable=True))
    op.add_column("messages", sa.Column("tags", sa.Text, nullable=True))
    op.add_column("messages", sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("messages", sa.Column("signature", sa.LargeBinary, nullable=True))
    op.add_column("events", sa.Column("attempt", sa.Integer, nullable=True))
    op.add_column("events", sa.Column("reply", sa.Text, nullable=True))
    op.add_column("events", sa.Column("mx_host", sa.String(255), nullable=True))
    op.add_column("events", sa.Column("webhook_due_at", sa.Float, nullable=True))
    op.add_column("events", sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("events", sa.Column("webhook_lease_until", sa.Float, nullable=True))
    op.create_index("ix_events_account_id", "events", ["account_id", "id"])
    op.create_index("ix_events_webhook_due", "events", ["webhook_due_at"],
                    sqlite_where=sa.text("webhook_due_at IS NOT NULL"),
                    postgresql_where=sa.text("webhook_due_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_events_webhook_due", "events")
    op.drop_index("ix_events_account_id", "events")
    for col in ("webhook_lease_until", "webhook_attempts", "webhook_due_at", "mx_host", "reply", "attempt"):
        op.drop_column("events", col)
    for col in ("signature", "sandbox", "tags", "subject", "message_id_header"):
        op.drop_column("messages", col)
    op.drop_table("usage")
    for col in ("webhook_secret", "webhook_url", "chaos", "sandbox"):
        op.drop_column("accounts", col)
