"""The shared failed-login counts (store.authfailures) on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from mailrelay.store import authfailures as F

RULES = {"window": 900.0, "lockout_after": 3, "lockout_seconds": 300.0}


def test_failures_count_up_to_a_lock_then_a_new_window_starts_over(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert F.add_failure(conn, "192.0.2.1", now=1000.0, **RULES) == (1, None)
        assert F.add_failure(conn, "192.0.2.1", now=1001.0, **RULES) == (2, None)
        assert F.add_failure(conn, "2001:db8::/64", now=1001.0, **RULES) == (1, None)  # its own count
        assert F.add_failure(conn, "192.0.2.1", now=1002.0, **RULES) == (3, 1302.0)
        assert F.locked_clients(conn, 1100.0) == [("192.0.2.1", 1302.0)]
        assert F.locked_clients(conn, 1302.0) == []
        # the window (900 s from the first failure) is over: counting starts again
        assert F.add_failure(conn, "192.0.2.1", now=1901.0, **RULES) == (1, None)


def test_prune_forgets_only_clients_whose_window_and_lock_are_over(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
            F.add_failure(conn, client, now=1000.0, **RULES)
        for _ in range(2):
            F.add_failure(conn, "192.0.2.3", now=1000.0, **RULES)  # locked until 1300
        F.add_failure(conn, "192.0.2.2", now=1950.0, **RULES)  # a new window, from 1950
        for _ in range(3):
            F.add_failure(conn, "192.0.2.4", now=1950.0, **RULES)  # window 1950, locked until 2250
        assert F.prune(conn, now=2000.0, window=900.0) == 2  # .1 and .3: window and lock over
        assert F.prune(conn, now=2000.0, window=900.0) == 0
        assert F.prune(conn, now=2000.0, window=30.0) == 1  # .2; .4's window is over, its lock is not
        left = {r.client for r in conn.execute(sa.text("SELECT client FROM auth_failures"))}
    assert left == {"192.0.2.4"}
