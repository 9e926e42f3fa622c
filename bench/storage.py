"""Bytes on disk per message in SQLite, as accepted, after retention clears bodies, after it deletes.

Fills a new SQLite database (in a temporary folder) with N messages of SIZE bytes through the
real spool writer (SpoolWriter.submit_many, the SMTP path's last step: message, recipient,
category-free, one `processed` event each), gives each what a delivery leaves (recipient
`delivered`, one attempt, one `delivered` event), ages them, then runs retention's sweeps:
bodies only, then everything. Prints the database file size over N at each step (after a WAL
checkpoint), and the sweeps' times.

    .venv/bin/python bench/storage.py            # N=20000, SIZE=2048
    .venv/bin/python bench/storage.py -n 5000 --size 10240 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store import migrate
from mailrelay.store import retention as R
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, attempts, events, messages, recipients

DAY = 86_400.0


def _body(size: int, i: int) -> bytes:
    head = (f"From: sender@example.org\r\nTo: rcpt{i}@example.net\r\nSubject: storage test {i}\r\n"
            f"Message-ID: <{i}@example.org>\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    text = head + line * (size // len(line) + 1)
    return text[:size - 2] + b"\r\n"


async def _fill(engine: sa.Engine, n: int, size: int, created: float) -> None:
    writer = SpoolWriter(engine)
    writer.start(asyncio.get_running_loop())
    trace = b"Received: from client.test (client.test [192.0.2.7]) by mx.test with ESMTPSA id x\r\n"
    try:
        for start in range(0, n, 500):
            records = [SpoolRecord(queue_id=f"Q{i:010d}", account_id=1, mail_from="sender@example.org",
                                   mail_params={"SIZE": str(size)}, recipients=[(f"rcpt{i}@example.net", {})],
                                   client_ip="192.0.2.7", helo="client.test", auth_user="bench",
                                   tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                                   listener="submission", trace_headers=trace, body=_body(size, i),
                                   created_at=created + i * 0.001, subject=f"storage test {i}",
                                   message_id_header=f"<{i}@example.org>")
                       for i in range(start, min(n, start + 500))]
            await writer.submit_many(records, None)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)


def _deliver_all(engine: sa.Engine, created: float) -> None:
    with engine.begin() as conn:
        rows = conn.execute(sa.select(recipients.c.id, recipients.c.message_id, recipients.c.address)).all()
        conn.execute(recipients.update().values(status="delivered", attempts=1, last_reply="250 2.0.0 ok",
                                                updated_at=created + 1))
        conn.execute(attempts.insert(), [{"message_id": m, "recipient_id": r, "at": created + 1, "mx_host": "mx.test",
                                          "ip": "192.0.2.25", "tls": "TLSv1.3 TLS_AES_256_GCM_SHA384",
                                          "reply": "250 2.0.0 ok", "outcome": "delivered"} for r, m, _ in rows])
        conn.execute(events.insert(), [{"account_id": 1, "message_id": m, "recipient": a, "type": "delivered",
                                        "at": created + 1, "attempt": 1, "reply": "250 2.0.0 ok",
                                        "mx_host": "mx.test"} for _, m, a in rows])


def _size(engine: sa.Engine, path: Path) -> int:
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="messages (default 20000)")
    ap.add_argument("--size", type=int, default=2048, help="bytes per message body (default 2048)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="mailrelay-storage-"))
    path = scratch / "mailrelay.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(accounts.insert().values(id=1, name="bench", password_hash="x", created_at=0, updated_at=0))
        empty = _size(engine, path)
        now = time.time()
        created = now - 40 * DAY
        t0 = time.monotonic()
        asyncio.run(_fill(engine, args.n, args.size, created))
        fill_s = time.monotonic() - t0
        _deliver_all(engine, created)
        with engine.connect() as conn:
            real = conn.execute(sa.select(sa.func.sum(messages.c.size))).scalar_one() / args.n
            vacuum = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        full = _size(engine, path)
        t0 = time.monotonic()
        bodies = R.sweep(engine, R.Plan.at(now, {"bodies": 7}), batch=500)["bodies"]
        bodies_s = time.monotonic() - t0
        cleared = _size(engine, path)
        t0 = time.monotonic()
        gone = R.sweep(engine, R.Plan.at(now, {"messages": 30}), batch=500)["messages"]
        delete_s = time.monotonic() - t0
        after = _size(engine, path)
        n = args.n
        print(f"N={n} messages of {real:.0f} bytes (body {args.size} + trace headers), SQLite auto_vacuum={vacuum}, "
              f"empty database {empty / 1024:.0f} KiB; accepted in {fill_s:.1f}s")
        print(f"  as delivered:    {full / 1e6:7.1f} MB  {(full - empty) / n:7.0f} bytes/message "
              f"({(full - empty) / n / real:.2f}x the message)")
        print(f"  bodies cleared:  {cleared / 1e6:7.1f} MB  {(cleared - empty) / n:7.0f} bytes/message "
              f"({bodies.messages} messages, {bodies.bytes / 1e6:.1f} MB of bodies, {bodies_s:.1f}s)")
        print(f"  all deleted:     {after / 1e6:7.1f} MB  {(after - empty) / n:7.0f} bytes/message "
              f"({gone.messages} messages, {gone.recipients} recipients, {gone.attempts} attempts, "
              f"{gone.events} events, {delete_s:.1f}s)")
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
