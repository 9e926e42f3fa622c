"""Message content on disk (store.bodies): close to its real size on SQLite, given back by
retention, read back byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store import bodies, migrate
from mailrelay.store import retention as R
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, attempts, events, message_bodies, messages, recipients
from tests.support.samplemail import sample_message

N = 500
NOW = 1_800_000_000.0
TRACE = (b"Received: from client.test (client.test [192.0.2.7])\r\n\tby mx.mailrelay.test (mailrelay) with ESMTPSA"
         b" id 0KX3abcdEFGH1234\r\n\tfor <rcpt@example.net>; Thu, 03 Dec 2026 10:00:00 +0000\r\n")
# Every row and index entry of a message but its content, per message: a recipient, two events,
# an attempt and the message's own row (bench/storage.py measured 1,003 bytes).
FIXED = 1_100


async def _fill(engine: sa.Engine, created: float) -> None:
    """N realistic 2 KB messages through the spool writer, in groups of 50 (a busy writer's batches)."""
    writer = SpoolWriter(engine)
    writer.start(asyncio.get_running_loop())
    try:
        for start in range(0, N, 50):
            await writer.submit_many([
                SpoolRecord(queue_id=f"Q{i:04d}", account_id=1, mail_from="orders@shop.example.com",
                            mail_params={}, recipients=[(f"rcpt{i}@example.net", {})], client_ip="192.0.2.7",
                            helo="client.test", auth_user="shop", tls_version="TLSv1.3",
                            tls_cipher="TLS_AES_256_GCM_SHA384", listener="submission", trace_headers=TRACE,
                            body=sample_message(2048, i), created_at=created + i, subject=f"order {i}",
                            message_id_header=f"<{i}@shop.example.com>")
                for i in range(start, start + 50)], None)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


def _deliver(engine: sa.Engine, at: float) -> None:
    """What a delivery leaves: the recipient delivered, an attempt, a `delivered` event."""
    with engine.begin() as conn:
        rows = conn.execute(sa.select(recipients.c.id, recipients.c.message_id, recipients.c.address)).all()
        conn.execute(recipients.update().values(status="delivered", attempts=1, last_reply="250 2.0.0 ok",
                                                next_attempt_at=None, updated_at=at))
        conn.execute(attempts.insert(), [{"message_id": m, "recipient_id": r, "at": at, "mx_host": "mx.test",
                                          "ip": "192.0.2.25", "tls": "TLSv1.3 TLS_AES_256_GCM_SHA384",
                                          "reply": "250 2.0.0 ok", "outcome": "delivered"} for r, m, _ in rows])
        conn.execute(events.insert(), [{"account_id": 1, "message_id": m, "recipient": a, "type": "delivered",
                                        "at": at, "attempt": 1, "reply": "250 2.0.0 ok", "mx_host": "mx.test"}
                                       for _, m, a in rows])


def test_2kb_mail_takes_about_its_size_and_a_cleared_body_gives_its_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "mailrelay.db"
    engine = create_engine(f"sqlite:///{path}")

    def size() -> int:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
        return path.stat().st_size

    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(accounts.insert().values(id=1, name="shop", password_hash="x", created_at=0, updated_at=0))
        empty = size()
        created = NOW - 40 * 86_400
        asyncio.run(_fill(engine, created))
        _deliver(engine, created + 60)
        with engine.connect() as conn:
            real = conn.execute(sa.select(sa.func.avg(messages.c.size))).scalar_one()
            content = bodies.load(conn, [f"Q{i:04d}" for i in range(N)])
        assert content == {f"Q{i:04d}": bodies.Content(TRACE, sample_message(2048, i)) for i in range(N)}
        per_message = (size() - empty) / N
        # Before the body table: 4,917 bytes, a 4 KiB page for each 2.4 KB message row.
        assert per_message <= 1.3 * real + FIXED, (per_message, real)

        removed = R.sweep(engine, R.Plan.at(NOW, {"bodies": 7}), batch=100)["bodies"]
        assert removed.messages == N
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(message_bodies)).scalar_one() == 0
            assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0  # given back to the file system
        # Emptying the column inside `messages` freed nothing; deleting the rows frees their pages.
        assert (size() - empty) / N <= FIXED
    finally:
        engine.dispose()
