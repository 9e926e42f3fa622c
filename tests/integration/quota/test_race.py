"""Many sessions racing at the daily limit never push an account past it: in one process, and
with two `mailrelay serve` processes on one database. Both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, recipients, usage
from tests.integration.quota.conftest import Clock, stored_recipients, usage_of
from tests.integration.serve.test_serve_process import Server, base_env, free_port, write_config
from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import RawClient

SESSIONS = 50
PER_SESSION = 3
LIMIT = 20


def race(ports: list[int]) -> list[int]:
    """SESSIONS trusted clients, spread over `ports`, each sending PER_SESSION RCPTs at once
    (after all have said MAIL), then DATA if any was accepted; every RCPT reply code."""
    barrier = threading.Barrier(SESSIONS, timeout=30)
    codes: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def session(k: int) -> None:
        try:
            c = RawClient(ports[k % len(ports)], timeout=30)
            assert c.reply()[0] == 220
            assert c.cmd("EHLO client.test")[0] == 250
            assert c.cmd("MAIL FROM:<app@example.net>")[0] == 250
            barrier.wait()
            c.send(b"".join(b"RCPT TO:<s%d-%d@example.com>\r\n" % (k, i) for i in range(PER_SESSION)))
            mine = [c.reply()[0] for _ in range(PER_SESSION)]
            if 250 in mine:
                code, text = c.cmd("DATA")
                assert code == 354, text
                code, text = c.cmd(b"Subject: race\r\n\r\nhi\r\n.")
                assert code == 250, text
            c.cmd("QUIT")
            c.close()
            with lock:
                codes.extend(mine)
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return codes


def test_fifty_sessions_racing_never_pass_the_limit(quota_node: Callable[..., tuple[Node, Clock]]) -> None:
    node, clock = quota_node(f"[plans.free]\ndaily_limit = {LIMIT}\n[smtp]\nmax_connections_per_ip = 200\n")
    codes = race([node.port("smtp")])
    assert sorted(set(codes)) == [250, 451]
    assert codes.count(250) == LIMIT
    assert stored_recipients(node) == LIMIT
    assert usage_of(node, "bob", clock.now) == (LIMIT, LIMIT)


def test_two_processes_on_one_database_never_pass_the_limit(tmp_path: Path, db_url: str) -> None:
    """Two `mailrelay serve` nodes on one database (PostgreSQL as in production; SQLite
    processes share the file too), the sessions split between them."""
    ports = [free_port(), free_port()]
    servers: list[Server] = []
    try:
        for n, port in enumerate(ports):
            node_dir = tmp_path / f"node{n}"
            node_dir.mkdir()
            # The first start makes the demo account, the trusted-network account of both.
            config = write_config(node_dir, db_url, port, f"""
[server]
demo_account = {"true" if n == 0 else "false"}
[plans.free]
daily_limit = {LIMIT}
[smtp]
max_connections_per_ip = 200
""")
            server = Server(node_dir, ["-c", str(config), "serve"], base_env(node_dir))
            servers.append(server)
            server.wait_ready()
        codes = race(ports)
    finally:
        for server in servers:
            server.stop()
    assert sorted(set(codes)) == [250, 451]
    assert codes.count(250) == LIMIT
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            demo = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "demo")).scalar_one()
            assert conn.execute(sa.select(sa.func.count()).select_from(recipients)).scalar_one() == LIMIT
            rows = conn.execute(sa.select(usage.c.period, usage.c.count).where(usage.c.account_id == demo))
            counted: dict[str, int] = {period: count for period, count in rows}
    finally:
        engine.dispose()
    # One day and one month (unless the test ran across midnight UTC: then two of each).
    assert sum(n for p, n in counted.items() if p.startswith("D")) == LIMIT, counted
    assert sum(n for p, n in counted.items() if p.startswith("M")) == LIMIT, counted
