"""Bytes on disk per message, as accepted and delivered, after retention clears bodies, after it deletes.

For each message size, fills a new database with N realistic messages (tests/support/samplemail:
varied text, the same as HTML with tracking links, a base64 attachment taking `--attachment` of
the message where it fits; every message different) through the real spool writer
(SpoolWriter.submit_many, the SMTP path's last step: message, body, recipient, one `processed`
event each), gives each what a delivery leaves (recipient `delivered`, one attempt, one
`delivered` event), ages them, then runs retention's sweeps: bodies only, then everything.
SQLite: the file's size over N at each step (after a WAL checkpoint; retention's sweep ends with
an incremental vacuum), and the bytes per message of each table with its indexes (dbstat).
PostgreSQL (`--db postgresql`, a schema of its own at MAILRELAY_BENCH_PG_URL, default the local
`test` database, dropped afterwards): each table's pg_total_relation_size (heap, TOAST, indexes)
over N, before and after the sweeps and a plain VACUUM (which keeps the files' size but makes
their free space reusable).

The fixed cost per message (every row and index entry but the message's own bytes) is measured
with a second fill of N messages with no trace headers and an empty body; the target is
`as delivered <= 1.3 x the message + fixed`. Last, the CPU time to compress a message (the
spool writer, at accept) and to decompress it (every read), on 300 of them (store.bodies).

    .venv/bin/python bench/storage.py                        # N=20000 at 2 KB, 10 KB, 50 KB
    .venv/bin/python bench/storage.py -n 5000 --size 10240 --keep
    .venv/bin/python bench/storage.py -n 2000 --db postgresql

Security: only 127.0.0.1 traffic; scratch data in a temporary folder or a schema of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.support

from tests.support.samplemail import sample_message

from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store import bodies, migrate
from mailrelay.store import retention as R
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, attempts, events, messages, recipients

DAY = 86_400.0
PG_URL = os.environ.get("MAILRELAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TRACE = (b"Received: from client.test (client.test [192.0.2.7])\r\n\tby mx.mailrelay.test (mailrelay) with ESMTPSA"
         b" id 0KX3abcdEFGH1234\r\n\tfor <rcpt@example.net>; Thu, 03 Dec 2026 10:00:00 +0000\r\n")


async def _fill(engine: sa.Engine, n: int, body: Callable[[int], bytes], trace: bytes, created: float) -> float:
    """Submit N messages in groups of 50 (a busy writer's batches); the seconds the writer took
    (making the messages is not counted)."""
    writer = SpoolWriter(engine)
    writer.start(asyncio.get_running_loop())
    took = 0.0
    try:
        for start in range(0, n, 50):
            records = [SpoolRecord(queue_id=f"Q{i:010d}", account_id=1, mail_from="orders@shop.example.com",
                                   mail_params={"SIZE": "0"}, recipients=[(f"rcpt{i}@example.net", {})],
                                   client_ip="192.0.2.7", helo="client.test", auth_user="bench",
                                   tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                                   listener="submission", trace_headers=trace, body=body(i),
                                   created_at=created + i * 0.001, subject=f"storage test {i}",
                                   message_id_header=f"<{i}@shop.example.com>")
                       for i in range(start, min(n, start + 50))]
            t0 = time.perf_counter()
            await writer.submit_many(records, None)
            took += time.perf_counter() - t0
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
    return took


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


class Database:
    """A fresh mailrelay database: its size in bytes, and per table (indexes included)."""

    def __init__(self, kind: str, scratch: Path, name: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = scratch / f"{name}.db"
            self.engine = create_engine(f"sqlite:///{self.path}")
        else:
            self.schema = f"mailrelay_bench_storage_{os.getpid()}_{name}"
            with _pg_base() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
                conn.exec_driver_sql(f"CREATE SCHEMA {self.schema}")
            sep = "&" if "?" in PG_URL else "?"
            self.engine = create_engine(f"{PG_URL}{sep}options=-csearch_path%3D{self.schema}")
        migrate.upgrade(self.engine)
        with self.engine.begin() as conn:
            conn.execute(accounts.insert().values(id=1, name="bench", password_hash="x", created_at=0, updated_at=0))

    def tables(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            if self.kind == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
                return {t: int(b) for t, b in conn.exec_driver_sql(
                    "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                    "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1").all()}
            return {t: int(b) for t, b in conn.exec_driver_sql(
                "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'").all()}

    def size(self) -> int:
        if self.kind == "sqlite":
            self.tables()  # checkpoints
            return self.path.stat().st_size
        return sum(self.tables().values())

    def vacuum(self) -> None:
        if self.kind == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")

    def close(self) -> None:
        self.engine.dispose()
        if self.kind == "postgresql":
            with _pg_base() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


class _pg_base:  # lower case: used as a function, `with _pg_base() as conn`
    """An autocommit connection to the database the schemas are made in."""

    def __init__(self) -> None:
        self.engine = create_engine(PG_URL, poolclass=sa.pool.NullPool)

    def __enter__(self) -> sa.Connection:
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


def codec_cpu(size: int, attachment: float, count: int = 300) -> tuple[float, float]:
    """CPU µs per message to compress (the spool writer, at accept) and decompress (each read)
    `count` realistic messages of `size`: the best of five rounds of this thread's CPU time."""
    mail = [sample_message(size, i, attachment=attachment) for i in range(count)]
    best_pack = best_unpack = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        packed = [bodies.pack(m) for m in mail]
        t1 = time.thread_time()
        back = [bodies.unpack(p) for p in packed]
        t2 = time.thread_time()
        assert back == mail
        best_pack, best_unpack = min(best_pack, t1 - t0), min(best_unpack, t2 - t1)
    return best_pack / count * 1e6, best_unpack / count * 1e6


def run(kind: str, n: int, size: int, attachment: float, scratch: Path) -> dict[str, float]:
    now = time.time()
    created = now - 40 * DAY
    # The fixed cost: everything a message costs but its bytes (no trace headers, empty body).
    fixed_db = Database(kind, scratch, f"fixed{size}")
    try:
        empty = fixed_db.size()
        asyncio.run(_fill(fixed_db.engine, n, lambda i: b"", b"", created))
        _deliver_all(fixed_db.engine, created)
        fixed = (fixed_db.size() - empty) / n
    finally:
        fixed_db.close()
    db = Database(kind, scratch, f"mail{size}")
    try:
        empty = db.size()
        before = db.tables()
        fill_s = asyncio.run(_fill(db.engine, n, lambda i: sample_message(size, i, attachment=attachment), TRACE,
                                   created))
        _deliver_all(db.engine, created)
        with db.engine.connect() as conn:
            real = conn.execute(sa.select(sa.func.sum(messages.c.size))).scalar_one() / n
        full = db.size()
        per_table = {t: (b - before.get(t, 0)) / n for t, b in db.tables().items()}
        t0 = time.monotonic()
        bodies = R.sweep(db.engine, R.Plan.at(now, {"bodies": 7}), batch=500)["bodies"]
        db.vacuum()
        bodies_s = time.monotonic() - t0
        cleared = db.size()
        t0 = time.monotonic()
        gone = R.sweep(db.engine, R.Plan.at(now, {"messages": 30}), batch=500)["messages"]
        db.vacuum()
        delete_s = time.monotonic() - t0
        after = db.size()
    finally:
        db.close()
    per = (full - empty) / n
    target = 1.3 * real + fixed
    pack_us, unpack_us = codec_cpu(size, attachment)
    print(f"{kind}: N={n} messages of {real:.0f} bytes (body {size} + trace headers, attachment "
          f"{attachment:.0%}), accepted in {fill_s:.1f}s ({n / fill_s:.0f}/s through the writer)")
    print(f"  codec:           {pack_us:7.1f} µs to compress a message, {unpack_us:.1f} µs to decompress (CPU)")
    print(f"  fixed cost:      {fixed:7.0f} bytes/message (empty messages, same rows)")
    print(f"  as delivered:    {full / 1e6:7.1f} MB  {per:7.0f} bytes/message ({per / real:.2f}x the message; "
          f"target 1.3x + fixed = {target:.0f}: {'met' if per <= target else 'NOT met'})")
    print("    per table:     " + ", ".join(f"{t} {b:.0f}" for t, b in sorted(per_table.items(), key=lambda x: -x[1])
                                         if abs(b) >= 1))
    print(f"  bodies cleared:  {cleared / 1e6:7.1f} MB  {(cleared - empty) / n:7.0f} bytes/message "
          f"({bodies.messages} messages, {bodies.bytes / 1e6:.1f} MB of stored bodies, {bodies_s:.1f}s)")
    print(f"  all deleted:     {after / 1e6:7.1f} MB  {(after - empty) / n:7.0f} bytes/message "
          f"({gone.messages} messages, {gone.recipients} recipients, {gone.attempts} attempts, "
          f"{gone.events} events, {delete_s:.1f}s)", flush=True)
    return {"real": real, "fixed": fixed, "per": per, "cleared": (cleared - empty) / n, "after": (after - empty) / n,
            "pack_us": pack_us, "unpack_us": unpack_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="messages per size (default 20000)")
    ap.add_argument("--size", default="2048,10240,51200", help="message sizes in bytes, comma-separated "
                    "(default 2048,10240,51200)")
    ap.add_argument("--attachment", type=float, default=0.25,
                    help="share of each message that is a base64 attachment, where it fits (default 0.25)")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (SQLite)")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="mailrelay-storage-"))
    results = []
    try:
        for kind in (("sqlite", "postgresql") if args.db == "both" else (args.db,)):
            for size in (int(s) for s in args.size.split(",")):
                results.append((kind, size, run(kind, args.n, size, args.attachment, scratch)))
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch)
    print("\n| database | body | message | fixed | as delivered | x message | bodies cleared | all deleted "
          "| compress µs | decompress µs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, size, r in results:
        print(f"| {kind} | {size:,} | {r['real']:,.0f} | {r['fixed']:,.0f} | {r['per']:,.0f} | "
              f"{r['per'] / r['real']:.2f} | {r['cleared']:,.0f} | {r['after']:,.0f} | {r['pack_us']:.0f} | "
              f"{r['unpack_us']:.0f} |")


if __name__ == "__main__":
    main()
