#!/usr/bin/env python3
"""The activity page at scale: one account with 1,000,000 sent messages, each filter timed.

Fills a fresh database (SQLite in a temporary folder, and PostgreSQL at 127.0.0.1:5432 database
`test` in a schema of its own, dropped afterwards) through SQLAlchemy Core in batches, then
times the page's server work, the query (mailrelay.events.activity.activity_page) and the
rendering of activity.html, for the newest page, a deep page reached by cursor, each filter and
a date range; prints p50 / max milliseconds per case and each case's query plan (SQLite
EXPLAIN QUERY PLAN, PostgreSQL EXPLAIN ANALYZE). Target: under 200 ms each.

    .venv/bin/python bench/activity_page.py                 # 1,000,000 messages, both databases
    .venv/bin/python bench/activity_page.py -n 20000 --db sqlite --plans

Security: only 127.0.0.1 traffic; scratch data in a temporary folder or a schema of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from mailrelay.core.ids import _encode
from mailrelay.events.activity import STATUSES, Cursor, Search, activity_page, query_plan
from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, message_categories, messages, recipients
from mailrelay.web.common import page

PG_URL = os.environ.get("MAILRELAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 10_000
DAY = 86400.0
DAYS = 100  # the messages are spread over this many days, ending now
ROWS = 50  # one page, as the dashboard shows
SENDERS = 20  # each sends 5% of the mail
ADDRESSES = 50_000  # each gets N / ADDRESSES messages (20 of 1,000,000)
SUBJECTS = 1000
CATEGORIES = 10


def status_of(i: int) -> str:
    k = i % 100
    return "bounced" if k == 0 else "deferred" if k < 4 else "queued" if k < 5 else "delivered"


def fill(engine: sa.Engine, n: int, start: float) -> tuple[int, int, list[str]]:
    """Account "bench" with n messages of one recipient each (and "other" with n // 100, so the
    account in each index matters); returns both account ids and bench's queue ids in order."""
    with engine.begin() as conn:
        ids = []
        for name in ("bench", "other"):
            ids.append(conn.execute(accounts.insert().values(name=name, password_hash="x", created_at=start,
                                                             updated_at=start)).inserted_primary_key[0])
    step = DAY * DAYS / n
    queue_ids: list[str] = []
    began = time.perf_counter()
    for account_id, count in ((ids[1], n // 100), (ids[0], n)):
        for first in range(0, count, BATCH):
            msgs, rcpts, cats = [], [], []
            for i in range(first, min(first + BATCH, count)):
                at = start + i * step
                qid = _encode(int(at * 1000), 9) + _encode(i * 2 + (account_id == ids[1]), 7)
                msgs.append({"id": qid, "account_id": account_id, "mail_from": f"sender{i % SENDERS}@bench.test",
                             "client_ip": "127.0.0.1", "helo": "bench", "listener": "api", "size": 1,
                             "trace_headers": b"", "body": b"x", "created_at": at,
                             "subject": f"Newsletter {i % SUBJECTS}", "direction": "out"})
                status = status_of(i)
                rcpts.append({"message_id": qid, "account_id": account_id, "address": f"user{i % ADDRESSES}@dest.test",
                              "domain": "dest.test", "status": status, "attempts": 1,
                              "next_attempt_at": at + 600 if status in ("queued", "deferred") else None,
                              "updated_at": at + 5})
                cats.append({"account_id": account_id, "category": f"cat{i % CATEGORIES}", "message_id": qid})
                if i % 1000 == 7:
                    cats.append({"account_id": account_id, "category": "rare", "message_id": qid})
                if account_id == ids[0]:
                    queue_ids.append(qid)
            with engine.begin() as conn:
                conn.execute(messages.insert(), msgs)
                conn.execute(recipients.insert(), rcpts)
                conn.execute(message_categories.insert(), cats)
            done = first + len(msgs)
            if done % 100_000 == 0 or done == count:
                rate = done / (time.perf_counter() - began)
                print(f"  account {account_id}: {done:,} of {count:,} messages ({rate:,.0f}/s)", flush=True)
        began = time.perf_counter()
    return ids[0], ids[1], queue_ids


def cases(queue_ids: list[str], start: float,
          rid_of: Callable[[str], int]) -> Iterator[tuple[str, Search, dict[str, Any]]]:
    n = len(queue_ids)
    mid = queue_ids[n // 2]
    deep = Cursor(mid, rid_of(mid))
    day = start + DAY * (DAYS // 2)
    yield "newest page, no filter", Search(), {}
    yield "deep page (older than the middle row)", Search(), {"older_than": deep}
    yield "newer than the middle row", Search(), {"newer_than": deep}
    yield "recipient (20 rows)", Search(equals={"to_email": "user4242@dest.test"}), {}
    yield "sender (5%)", Search(equals={"from_email": "SENDER7@bench.test"}), {}
    yield "subject, exact (0.1%)", Search(equals={"subject": "Newsletter 42"}), {}
    yield "status delivered (95%)", Search(equals={"status": "delivered"}), {}
    yield "status not_delivered (1%)", Search(equals={"status": "not_delivered"}), {}
    yield "status processing (4%), deep", Search(equals={"status": "processing"}), {"older_than": deep}
    yield "category (10%)", Search(equals={"category": "cat3"}), {}
    yield "category (0.1%)", Search(equals={"category": "rare"}), {}
    yield "date range (one day)", Search(sent_from=day, sent_before=day + DAY), {}
    yield "recipient + date range", Search(equals={"to_email": "user4242@dest.test"},
                                           sent_from=start, sent_before=day), {}
    yield "small account (1% of all), newest page", Search(), {"small": True}
    yield "small account, status not_delivered", Search(equals={"status": "not_delivered"}), {"small": True}
    yield "sender + status processing (1%)", Search(equals={"from_email": "sender2@bench.test",
                                                            "status": "processing"}), {}
    yield "sender + status, none match (worst case)", Search(equals={"from_email": "sender7@bench.test",
                                                          "status": "not_delivered"}), {}


def server_work(engine: sa.Engine, account_id: int, search: Search, kw: dict[str, Any]) -> int:
    found = activity_page(engine, account_id, search, ROWS, **kw)
    html = page("activity.html", rows=found.rows, given={}, statuses=sorted(STATUSES), query="",
                older=found.older, newer=found.newer, first=not kw, account="bench", csrf="x", notice="",
                path="/activity", title="Activity").body
    return len(html)


def plan(engine: sa.Engine, account_id: int, search: Search, kw: dict[str, Any]) -> str:
    return "\n".join(f"    {line}" for line in query_plan(engine, account_id, search, limit=ROWS, **kw))


def run(name: str, url: str, n: int, repeat: int, plans: bool) -> list[tuple[str, float, float]]:
    print(f"== {name}: {n:,} messages", flush=True)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        start = time.time() - DAY * DAYS
        began = time.perf_counter()
        account_id, small_id, queue_ids = fill(engine, n, start)
        print(f"  filled in {time.perf_counter() - began:.0f} s", flush=True)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")  # what autovacuum does soon after a bulk load

        def rid_of(qid: str) -> int:
            with engine.connect() as conn:
                return int(conn.execute(sa.select(recipients.c.id).where(recipients.c.message_id == qid)).scalar_one())

        out = []
        for label, search, kw in cases(queue_ids, start, rid_of):
            who = small_id if kw.pop("small", False) else account_id
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                server_work(engine, who, search, kw)
                times.append((time.perf_counter() - t0) * 1000)
            out.append((label, statistics.median(times), max(times)))
            print(f"  {label:<40} p50 {statistics.median(times):7.1f} ms  max {max(times):7.1f} ms", flush=True)
            if plans:
                print(plan(engine, who, search, kw), flush=True)
        return out
    finally:
        engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="messages in the account (default 1,000,000)")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per case (default 10)")
    ap.add_argument("--plans", action="store_true", help="print each case's query plan")
    args = ap.parse_args()
    n, repeat = max(1000, min(args.n, 5_000_000)), max(1, min(args.repeat, 100))
    results = {}
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="activity-bench-") as tmp:
            results["sqlite"] = run("SQLite", f"sqlite:///{tmp}/bench.db", n, repeat, args.plans)
    if args.db in ("postgresql", "both"):
        schema = f"mailrelay_bench_activity_{os.getpid()}"
        base = create_engine(PG_URL)
        try:
            with base.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in PG_URL else "?"
            results["postgresql"] = run("PostgreSQL", f"{PG_URL}{sep}options=-csearch_path%3D{schema}", n, repeat,
                                        args.plans)
        finally:
            with base.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            base.dispose()
    print(f"\n{'case':<40}" + "".join(f" {db + ' p50/max ms':>24}" for db in results))
    labels = [label for label, _, _ in next(iter(results.values()))]
    for i, label in enumerate(labels):
        cells = "".join(f" {f'{r[i][1]:.1f} / {r[i][2]:.1f}':>24}" for r in results.values())
        print(f"{label:<40}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
