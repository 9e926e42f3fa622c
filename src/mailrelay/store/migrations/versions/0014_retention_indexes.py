"""Retention: indexes on the two foreign keys that had none, so deleting finished mail is
cheap. Deleting a recipient makes the database look up its attempts (`attempts.recipient_id`,
ON DELETE CASCADE), deleting a message its categories (`message_categories.message_id`); without
an index each lookup read the whole table (20,000 messages deleted in 35 s instead of about 3).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 15:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_recipient_id", "attempts", ["recipient_id"])
    op.create_index("ix_message_categories_message_id", "message_categories", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_categories_message_id", "message_categories")
    op.drop_index("ix_attempts_recipient_id", "attempts")
