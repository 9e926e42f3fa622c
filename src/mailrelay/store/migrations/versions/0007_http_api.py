"""What the HTTP API keeps: event webhook settings and signing keys, verified sender domains,
suppression kinds and unsubscribe groups, dynamic templates, and send batches.

Existing sender domains count as verified (they were usable before verification existed), so
an upgrade stops nobody's mail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, never SQLite's batch copy: recreating a parent table would fire its
    # ON DELETE CASCADE and empty the tables that point at it.
    op.add_column("accounts", sa.Column("webhook_enabled", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("accounts", sa.Column("webhook_events", sa.Text, nullable=True))  # JSON list; NULL: all
    op.add_column("accounts", sa.Column("webhook_signing_key", sa.Text, nullable=True))  # ECDSA P-256, PEM
    op.add_column("domains", sa.Column("verified_at", sa.Float, nullable=True))
    op.execute("UPDATE domains SET verified_at = created_at")
    op.add_column("suppressions", sa.Column("kind", sa.String(32), nullable=False, server_default="bounces"))
    op.add_column("messages", sa.Column("batch_id", sa.String(64), nullable=True))
    op.create_index("ix_messages_batch_id", "messages", ["batch_id"])
    op.create_table(
        "asm_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("name", sa.String(30), nullable=False),
        sa.Column("description", sa.String(100), nullable=False, server_default=""),
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "asm_suppressions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("asm_groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("group_id", "address", name="uq_asm_suppressions_group_address"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(64), primary_key=True),  # "d-" and 32 hex digits, as SendGrid's
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("generation", sa.String(16), nullable=False, server_default="dynamic"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "template_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("template_id", sa.String(64), sa.ForeignKey("templates.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text, nullable=False, server_default=""),
        sa.Column("html_content", sa.Text, nullable=False, server_default=""),
        sa.Column("plain_content", sa.Text, nullable=False, server_default=""),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("editor", sa.String(16), nullable=False, server_default="code"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mail_batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("status", sa.String(16), nullable=True),  # NULL, "pause" or "cancel" (scheduled sends)
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mail_batches")
    op.drop_table("template_versions")
    op.drop_table("templates")
    op.drop_table("asm_suppressions")
    op.drop_table("asm_groups")
    op.drop_index("ix_messages_batch_id", "messages")
    op.drop_column("messages", "batch_id")
    op.drop_column("suppressions", "kind")
    op.drop_column("domains", "verified_at")
    for column in ("webhook_signing_key", "webhook_events", "webhook_enabled"):
        op.drop_column("accounts", column)
