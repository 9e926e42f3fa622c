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
