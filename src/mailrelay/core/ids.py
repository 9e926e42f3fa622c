"""Queue ids: 16 characters, sortable by time, safe in file names, logs and headers."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words
_BASE = len(_ALPHABET)


def _encode(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, _BASE)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_queue_id() -> str:
    """Milliseconds since the epoch (9 chars) + 34 random bits (7 chars)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(5), "big") >> 6  # 34 bits: 31**7 holds them
    return _encode(ms, 9) + _encode(rand, 7)
