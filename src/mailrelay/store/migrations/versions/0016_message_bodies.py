"""Message bodies in a table of their own, compressed (mailrelay.store.bodies): a 2 KB message took
a whole 4 KiB page inside its `messages` row, and emptying that column (retention) freed nothing.
Existing messages keep their content where it is; nothing is copied.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "message_bodies",
        sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("trace_headers", sa.LargeBinary, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    # Every body back into its `messages` row, uncompressed, before the table goes: no message
    # written since the upgrade loses its content.
    from mailrelay.store.bodies import unpack

    conn = op.get_bind()
    stored = sa.table("message_bodies", sa.column("message_id", sa.String), sa.column("trace_headers", sa.LargeBinary),
                      sa.column("body", sa.LargeBinary))
    inline = sa.table("messages", sa.column("id", sa.String), sa.column("trace_headers", sa.LargeBinary),
                      sa.column("body", sa.LargeBinary))
    put = inline.update().where(inline.c.id == sa.bindparam("qid")).values(
        trace_headers=sa.bindparam("trace"), body=sa.bindparam("data"))
    last = ""
    while rows := conn.execute(sa.select(stored).where(stored.c.message_id > last)
                               .order_by(stored.c.message_id).limit(500)).all():
        conn.execute(put, [{"qid": r.message_id, "trace": bytes(r.trace_headers), "data": unpack(bytes(r.body))}
                           for r in rows])
        last = rows[-1].message_id
    op.drop_table("message_bodies")
