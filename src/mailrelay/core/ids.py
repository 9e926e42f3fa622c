"""Ids: queue ids (16 characters, sortable by time, safe in file names, logs and headers), and
random ids of letters and digits (API keys, X-Message-Id, batches, operator keys)."""

from __future__ import annotations

import os
import secrets
import string
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


_ALNUM = string.ascii_letters + string.digits


def random_id(length: int) -> str:
    """`length` letters and digits, uniformly random (about 5.95 bits each): one draw of the
    system's random source, not one per character (this runs for every API mail send). Never
    starts with "-", so a command line never reads one as an option."""
    n = secrets.randbelow(len(_ALNUM) ** length)
    out = []
    for _ in range(length):
        n, r = divmod(n, len(_ALNUM))
        out.append(_ALNUM[r])
    return "".join(out)
