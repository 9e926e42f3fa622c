"""Proof of death by heartbeat, judged on the observer's own clock."""

from __future__ import annotations

import re

from mailrelay.spool.nodes import NAME_MAX, Watch, new_name


def test_names_are_unique_per_start_and_fit_the_lease_column() -> None:
    a, b = new_name("mx1.example.com", "-d0"), new_name("mx1.example.com", "-d0")
    assert a != b
    long = new_name("h" * 200, "-d3")
    assert len(f"{long}/inbound") <= NAME_MAX
    assert re.fullmatch(r"h{32}\.\d+\.[0-9a-f]{6}-d3", long)


def test_a_heartbeat_that_stands_still_for_dead_after_is_death() -> None:
    w = Watch(me="me", dead_after=10)
    assert w.dead([("me", 1.0), ("other", 5.0)], now=100) == []
    assert w.dead([("me", 2.0), ("other", 5.0)], now=109.9) == []
    assert w.dead([("me", 3.0), ("other", 5.0)], now=110) == [("other", 5.0)]


def test_a_changing_heartbeat_is_life_whatever_its_value_says() -> None:
    # Another host's clock may be far behind ours: only change counts, not the time written.
    w = Watch(me="me", dead_after=10)
    for t in range(0, 100, 5):
        assert w.dead([("other", -1e9 + t)], now=float(t)) == []


def test_we_never_judge_ourselves() -> None:
    w = Watch(me="me", dead_after=1)
    w.dead([("me", 1.0)], now=0)
    assert w.dead([("me", 1.0)], now=50) == []


def test_what_we_saw_before_we_lost_the_database_proves_nothing() -> None:
    w = Watch(me="me", dead_after=10)
    w.dead([("other", 5.0)], now=0)
    w.forget()  # our own reads failed from 0 to 30: the other may have been beating
    assert w.dead([("other", 5.0)], now=30) == []
    assert w.dead([("other", 5.0)], now=39) == []
    assert w.dead([("other", 5.0)], now=40) == [("other", 5.0)]


def test_a_node_gone_from_the_table_is_forgotten() -> None:
    w = Watch(me="me", dead_after=10)
    w.dead([("other", 5.0)], now=0)
    w.dead([], now=5)
    assert w.dead([("other", 5.0)], now=12) == []  # seen anew at 12
