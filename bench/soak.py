#!/usr/bin/env python3
"""soak - a long run through one node on SQLite with retention in minutes: does storage level off
and does the accept rate hold?

  bench/soak.py [-n 1000000] [--chunk 100000] [--conc 20] [--size 2048] [--new-connections]
                [--bodies-minutes 2] [--messages-minutes 5] [--interval 30] [--keep]

One mailrelay (SQLite, the defaults but for [retention]) relays to a counting `smtp-sink`
(its smarthost route, as in bench/deliver). Postfix's smtp-source sends N messages in chunks;
after each chunk a row is printed: the chunk's accept rate (chunk / smtp-source's wall time),
messages still in the database, the database file with its WAL, the sink's count, and the
server's memory. Retention clears bodies of delivered mail after --bodies-minutes and deletes
it after --messages-minutes, sweeping every --interval seconds; so after those minutes the
database should stop growing (a plateau) and the rate of the last chunk should be that of the
first. At the end: the sink must have counted N (more would be duplicates), first vs last chunk
rate, and the largest file size in the first and second halves. Saved to
bench/results/soak-<UTC time>.json. Every server is on 127.0.0.1 under a time limit.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchkit.py sits next to this script, so it is on sys.path[0]
from benchkit import (
    BenchError,
    Mailrelay,
    Sink,
    free_port,
    machine,
    memory,
    python_bin,
    raise_nofile,
    run_script,
    save_json,
    smtp_source,
    tree,
    unlimited,
)

CONFIG = """\
[delivery]
enabled = true
allow_private_destinations = true
max_connections = 50
max_per_domain = 50
retry_first = 5

[delivery.routes."*"]
host = "127.0.0.1"
port = {sink_port}
tls = "none"

[retention]
bodies_days = {bodies}
messages_days = {messages}
interval = {interval}
"""


def file_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def messages_held(db: Path) -> tuple[int, int]:
    """(messages, of which with a body) in the database, read-only beside the server."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        total, inline = con.execute("SELECT count(*), sum(length(body) > 0) FROM messages").fetchone()
        own = con.execute("SELECT count(*) FROM message_bodies").fetchone()[0]  # since migration 0016
        return int(total), int(inline or 0) + int(own)
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--conc", type=int, default=20)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--new-connections", action="store_true", help="a connection per message (default: reuse)")
    ap.add_argument("--bodies-minutes", type=float, default=2.0)
    ap.add_argument("--messages-minutes", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between retention sweeps")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    if a.n <= 0 or a.chunk <= 0 or a.conc <= 0:
        print("soak: -n, --chunk and --conc must be above 0", file=sys.stderr)
        return 2
    raise_nofile(4096)
    python = python_bin()
    scratch = Path(tempfile.mkdtemp(prefix="mailrelay-bench-soak-"))
    limit = 4 * 3600 + a.n / 50  # seconds: bounds every process started here
    sink = Sink(scratch / "sink", free_port(), time_limit=limit)
    config = CONFIG.format(sink_port=sink.port, bodies=a.bodies_minutes / 1440,
                           messages=a.messages_minutes / 1440, interval=a.interval)
    srv = Mailrelay(scratch / "mailrelay", free_port(), time_limit=limit, delivery=config)
    print(f"soak: N={a.n} chunk={a.chunk} C={a.conc} size={a.size} "
          f"{'new connection per message' if a.new_connections else 'connections reused'}; retention: "
          f"bodies {a.bodies_minutes:g} min, messages {a.messages_minutes:g} min, sweep every {a.interval:g} s; "
          f"scratch {scratch}")
    rows: list[dict[str, Any]] = []
    sink.start()
    try:
        srv.start(python)
        try:
            unlimited(srv, python)
            print(f"{'chunk':>5} {'sent':>9} {'msg/s':>7} {'in db':>9} {'bodies':>8} {'db+wal MB':>10} "
                  f"{'B/msg held':>10} {'sink':>9} {'RSS MB':>7} {'elapsed':>8}")
            t0 = time.monotonic()
            sent = 0
            while sent < a.n:
                n = min(a.chunk, a.n - sent)
                r = smtp_source(srv.port, n=n, conc=a.conc, size=a.size, reuse=not a.new_connections,
                                timeout=max(600.0, n / 20))
                if r["rc"] != 0 or r["completed"] != n:
                    raise BenchError(f"smtp-source: {r['completed']}/{n} completed, exit {r['rc']}: {r['stderr']}")
                sent += n
                held, bodies = messages_held(srv.db)
                size = file_bytes(srv.db)
                rss = memory(tree(srv.pid))["rss_kib"] * 1024
                row = {"chunk": len(rows) + 1, "sent": sent, "rate": r["rate"], "held": held, "bodies": bodies,
                       "db_bytes": size, "sink": sink.count(), "rss": rss,
                       "elapsed_s": round(time.monotonic() - t0, 1)}
                rows.append(row)
                print(f"{row['chunk']:>5} {sent:>9,} {r['rate']:>7,.0f} {held:>9,} {bodies:>8,} "
                      f"{size / 1e6:>10,.1f} {size / max(1, held):>10,.0f} {row['sink']:>9,} "
                      f"{rss / 1e6:>7,.0f} {row['elapsed_s']:>7,.0f}s", flush=True)
            deadline = time.monotonic() + 600
            while sink.count() < a.n and time.monotonic() < deadline:
                time.sleep(1)
            received = sink.count()
        finally:
            code = srv.stop()
    finally:
        sink.stop()
    half = len(rows) // 2
    first, last = rows[0]["rate"], rows[-1]["rate"]
    peak_first = max((r["db_bytes"] for r in rows[:half]), default=0)
    peak_second = max((r["db_bytes"] for r in rows[half:]), default=0)
    print(f"\nsink counted {received:,} of {a.n:,} ({'exactly once' if received == a.n else 'MISMATCH'}); "
          f"server exit {code}")
    print(f"accept rate: first chunk {first:,.0f} msg/s, last {last:,.0f} ({last / first:.2f}x)")
    print(f"database + WAL: largest {peak_first / 1e6:,.1f} MB in the first half, "
          f"{peak_second / 1e6:,.1f} MB in the second; at the end {rows[-1]['db_bytes'] / 1e6:,.1f} MB")
    problems = srv.problems()
    if problems:
        print("server log warnings/errors:", *problems[:20], sep="\n  ")
    path = save_json("soak", {"machine": machine(), "args": vars(a), "rows": rows, "received": received,
                              "server_exit": code, "problems": problems[:50]})
    print(f"saved {path}")
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if received == a.n else 1


if __name__ == "__main__":
    run_script("soak", main)
