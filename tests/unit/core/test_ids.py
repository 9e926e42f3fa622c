"""Random ids of letters and digits."""

from __future__ import annotations

import re

from mailrelay.core.ids import random_id


def test_random_ids_are_letters_and_digits_of_the_asked_length_and_differ() -> None:
    ids = {random_id(22) for _ in range(3000)}
    assert len(ids) == 3000
    assert all(re.fullmatch(r"[A-Za-z0-9]{22}", i) for i in ids)
    # every character position sees many values: no position is stuck (e.g. a leading zero)
    assert all(len({i[k] for i in ids}) > 50 for k in range(22))


def test_random_bytes_come_in_the_asked_sizes_across_refills_and_never_repeat() -> None:
    from mailrelay.core.ids import random_bytes

    chunks = [random_bytes(n) for n in (1, 5, 4096, 3, 10_000, 7) * 20]
    assert [len(c) for c in chunks] == [1, 5, 4096, 3, 10_000, 7] * 20
    big = [c for c in chunks if len(c) >= 4096]
    assert len(set(big)) == len(big)


def test_a_forked_child_does_not_hand_out_its_parents_buffered_bytes() -> None:
    import os

    from mailrelay.core.ids import random_bytes

    random_bytes(1)  # the buffer now holds bytes a child could copy
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 64 bytes, to the parent
        os.write(write, random_bytes(64))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 64 and child != random_bytes(64)


def test_random_ids_are_uniform_over_the_alphabet() -> None:
    from collections import Counter

    counts = Counter(random_id(1) for _ in range(62_000))
    assert len(counts) == 62
    # 1,000 expected per symbol; a biased draw (e.g. modulo without rejection over one byte,
    # which favours the first 8 symbols by 25 %) falls outside; a fair one is 7.6 sigma inside
    assert all(760 < c < 1240 for c in counts.values())
