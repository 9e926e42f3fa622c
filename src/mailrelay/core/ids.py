"""Ids: queue ids (16 characters, sortable by time, safe in file names, logs and headers), and
random ids of letters and digits (API keys, X-Message-Id, batches, operator keys)."""

from __future__ import annotations

import os
import string
import threading
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words
_BASE = len(_ALPHABET)


def _encode(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, _BASE)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


# The system's random source, read 4 KB at a time. os.urandom is a system call that lets go of
# the GIL: in a process whose other threads are busy (the API's, under load) each call then
# waited about 90 µs to get it back, twice per request. Emptied in a forked child, which must
# never hand out its parent's bytes.
_POOL_SIZE = 4096
_pool = bytearray()
_pool_lock = threading.Lock()


def random_bytes(n: int) -> bytes:
    """`n` bytes from the operating system's CSPRNG (os.urandom), drawn from a buffer."""
    global _pool
    with _pool_lock:
        if len(_pool) < n:
            _pool += os.urandom(max(_POOL_SIZE, n))
        out = bytes(_pool[:n])
        del _pool[:n]
    return out


def _forget_pool() -> None:
    global _pool
    _pool = bytearray()


os.register_at_fork(after_in_child=_forget_pool)


def new_queue_id() -> str:
    """Milliseconds since the epoch (9 chars) + 34 random bits (7 chars)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(5), "big") >> 6  # 34 bits: 31**7 holds them
    return _encode(ms, 9) + _encode(rand, 7)


_ALNUM = string.ascii_letters + string.digits


def random_id(length: int) -> str:
    """`length` letters and digits, uniformly random (about 5.95 bits each): one draw of the
    random source, not one per character (this runs for every API mail send). Never
    starts with "-", so a command line never reads one as an option."""
    space = len(_ALNUM) ** length
    size = (space.bit_length() + 7) // 8 + 1  # a byte more than needed: a redraw is rare
    limit = (256 ** size // space) * space  # below it, n % space is uniform
    n = limit
    while n >= limit:
        n = int.from_bytes(random_bytes(size), "big")
    n %= space
    out = []
    for _ in range(length):
        n, r = divmod(n, len(_ALNUM))
        out.append(_ALNUM[r])
    return "".join(out)


def queue_id_floor(at: float) -> str:
    """The smallest queue id made at or after `at` (epoch seconds): a time bound as a range of
    queue ids, which sort by the time they were made."""
    ms = max(0, min(int(at * 1000), _BASE ** 9 - 1))
    return _encode(ms, 9) + _ALPHABET[0] * 7
