"""why_waiting: the sentence `queue show` and the operator API give for a pending recipient."""

from __future__ import annotations

from mailrelay.spool.batches import HOLD
from mailrelay.spool.reader import RecipientDetail, why_waiting

NOW = 1_800_000_000.0


def detail(next_at: float | None, *, attempts: int = 0, lease: float | None = None,
           reply: str | None = None) -> RecipientDetail:
    return RecipientDetail("a@b.test", {}, "queued", attempts, next_at, reply, lease)


def test_each_reason_reads_as_a_sentence() -> None:
    assert why_waiting(detail(None), NOW) == "due now; 0 attempts"
    assert why_waiting(detail(NOW + 240, attempts=2, reply="451 4.7.1 later"), NOW) == (
        "next attempt in 4m; 2 attempts; last reply: 451 4.7.1 later")
    assert why_waiting(detail(NOW - 5, attempts=1, lease=NOW + 30), NOW) == "being delivered now; 1 attempt"


def test_a_recipient_of_a_paused_batch_is_held_not_three_centuries_away() -> None:
    scheduled = detail(HOLD + NOW + 3600)  # sent at NOW + 1 h, paused
    assert why_waiting(scheduled, NOW) == "held: its batch is paused (scheduled in 1h); 0 attempts"
    overdue = detail(HOLD + NOW - 60)  # its time passed while paused
    assert why_waiting(overdue, NOW) == "held: its batch is paused (due as soon as it is resumed); 0 attempts"
