"""The activity page's indexes: one per filter with the account and the newest-first order.

Recipients get their message's account (backfilled here) so a recipient or status filter reads
one index range; categories get a table of their own, filled from the messages' JSON tags.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

BATCH = 1000


def _subject_key() -> sa.ColumnElement[str]:
    # The same text as store.schema.subject_key (a migration does not import the live schema).
    return sa.func.substr(sa.column("subject"), sa.literal_column("1"), sa.literal_column("200"))


def upgrade() -> None:
    op.add_column("recipients", sa.Column("account_id", sa.Integer, nullable=True))
    op.execute("UPDATE recipients SET account_id = "
               "(SELECT messages.account_id FROM messages WHERE messages.id = recipients.message_id)")
    op.create_table(
        "message_categories",
        sa.Column("account_id", sa.Integer, primary_key=True),
        sa.Column("category", sa.String(255), primary_key=True),
        sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    )
    conn = op.get_bind()
    table = sa.table("message_categories", sa.column("account_id"), sa.column("category"), sa.column("message_id"))
    rows: list[dict[str, object]] = []
    found = conn.execute(sa.text("SELECT id, account_id, tags FROM messages WHERE tags IS NOT NULL"))
    for queue_id, account_id, tags in found:
        try:
            names = json.loads(tags).get("category")
        except (ValueError, AttributeError):
            continue
        names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
        rows += [{"account_id": account_id, "category": n, "message_id": queue_id}
                 for n in dict.fromkeys(n for n in names if isinstance(n, str) and n and len(n) <= 255)]
        if len(rows) >= BATCH:
            conn.execute(table.insert(), rows)
            rows = []
    if rows:
        conn.execute(table.insert(), rows)
    op.create_index("ix_messages_activity", "messages", ["account_id", "direction", "id"])
    op.create_index("ix_messages_activity_from", "messages",
                    ["account_id", "direction", sa.func.lower(sa.column("mail_from")), "id"])
    op.create_index("ix_messages_activity_subject", "messages", ["account_id", "direction", _subject_key(), "id"])
    op.create_index("ix_recipients_activity_to", "recipients",
                    ["account_id", sa.func.lower(sa.column("address")), "message_id", "id"])
    op.create_index("ix_recipients_activity", "recipients", ["account_id", "message_id", "id"])
    op.create_index("ix_recipients_activity_status", "recipients", ["account_id", "status", "message_id", "id"])
    # ix_messages_activity leads with the account: the account's own index is one more to keep
    # up to date at every accepted message, for nothing.
    op.drop_index("ix_messages_account_id", "messages")


def downgrade() -> None:
    op.create_index("ix_messages_account_id", "messages", ["account_id"])
    op.drop_index("ix_recipients_activity_status", "recipients")
    op.drop_index("ix_recipients_activity", "recipients")
    op.drop_index("ix_recipients_activity_to", "recipients")
    op.drop_index("ix_messages_activity_subject", "messages")
    op.drop_index("ix_messages_activity_from", "messages")
    op.drop_index("ix_messages_activity", "messages")
    op.drop_table("message_categories")
    with op.batch_alter_table("recipients") as batch:
        batch.drop_column("account_id")
