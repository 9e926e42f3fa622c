"""Proof of death by heartbeat, judged on the observer's own clock."""

from __future__ import annotations

import re
import subprocess
import sys

from mailrelay.spool.nodes import NAME_MAX, Node, Watch, gone_here, local_id, new_name


def N(name: str, heartbeat_at: float) -> Node:
    return Node(name, heartbeat_at, 1, None)


def test_names_are_unique_per_start_and_fit_the_lease_column() -> None:
    a, b = new_name("mx1.example.com", "-d0"), new_name("mx1.example.com", "-d0")
    assert a != b
    long = new_name("h" * 200, "-d3")
    assert len(f"{long}/inbound") <= NAME_MAX
    assert re.fullmatch(r"h{32}\.\d+\.[0-9a-f]{6}-d3", long)


def test_a_heartbeat_that_stands_still_for_dead_after_is_death() -> None:
    w = Watch(me="me", dead_after=10)
    assert w.dead([N("me", 1.0), N("other", 5.0)], now=100) == []
    assert w.dead([N("me", 2.0), N("other", 5.0)], now=109.9) == []
    assert w.dead([N("me", 3.0), N("other", 5.0)], now=110) == [N("other", 5.0)]


def test_a_changing_heartbeat_is_life_whatever_its_value_says() -> None:
    # Another host's clock may be far behind ours: only change counts, not the time written.
    w = Watch(me="me", dead_after=10)
    for t in range(0, 100, 5):
        assert w.dead([N("other", -1e9 + t)], now=float(t)) == []


def test_we_never_judge_ourselves() -> None:
    w = Watch(me="me", dead_after=1)
    w.dead([N("me", 1.0)], now=0)
    assert w.dead([N("me", 1.0)], now=50) == []


def test_what_we_saw_before_we_lost_the_database_proves_nothing() -> None:
    w = Watch(me="me", dead_after=10)
    w.dead([N("other", 5.0)], now=0)
    w.forget()  # our own reads failed from 0 to 30: the other may have been beating
    assert w.dead([N("other", 5.0)], now=30) == []
    assert w.dead([N("other", 5.0)], now=39) == []
    assert w.dead([N("other", 5.0)], now=40) == [N("other", 5.0)]


def test_a_node_gone_from_the_table_is_forgotten() -> None:
    w = Watch(me="me", dead_after=10)
    w.dead([N("other", 5.0)], now=0)
    w.dead([], now=5)
    assert w.dead([N("other", 5.0)], now=12) == []  # seen anew at 12


def test_a_process_of_this_machine_that_is_gone_is_dead_at_once() -> None:
    here = local_id()
    assert here is not None, "Linux: /proc tells the boot id and the PID namespace"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    gone_pid = int(ended.stdout)
    rows = [Node("gone", 1.0, gone_pid, here), Node("running", 1.0, 1, here),
            Node("elsewhere", 1.0, gone_pid, "another-boot:1"), Node("me", 1.0, gone_pid, here)]
    assert [n.name for n in gone_here(rows, me="me")] == ["gone"]
