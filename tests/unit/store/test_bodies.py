"""store.bodies: a body packed and unpacked is the same bytes, whatever they are."""

from __future__ import annotations

import random
import threading

import pytest

from mailrelay.store.bodies import CorruptBody, pack, unpack
from tests.support.samplemail import sample_message

BODIES = [
    b"",
    b"\r\n",
    bytes(range(256)) * 4,  # every byte value, NULs and bare CR/LF included
    b"Subject: x\r\n\r\n" + b"\xff\xfe 8-bit \xe9t\xe9\r\n" * 100,
    random.Random(5).randbytes(300_000),  # incompressible, past zstd's 128 KB block
    sample_message(2048, 1),
    sample_message(51_200, 2),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: f"{len(b)}")
def test_unpack_gives_back_the_same_bytes(body: bytes) -> None:
    stored = pack(body)
    assert unpack(stored) == body
    assert stored.startswith(b"\x28\xb5\x2f\xfd")  # a zstd frame


def test_realistic_mail_is_stored_in_about_half() -> None:
    for size in (2048, 10_240, 51_200):
        mail = [sample_message(size, i) for i in range(5)]
        assert sum(len(pack(m)) for m in mail) < 0.65 * sum(map(len, mail)), size


def test_one_compressor_per_thread_keeps_threads_apart() -> None:
    wrong: list[int] = []

    def work(seed: int) -> None:
        for i in range(50):
            body = sample_message(2048 + 64 * i, seed * 100 + i)
            if unpack(pack(body)) != body:
                wrong.append(seed)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_what_is_not_a_zstd_frame_is_refused() -> None:
    with pytest.raises(CorruptBody, match="not a zstd frame"):
        unpack(b"Subject: stored as is\r\n\r\nx\r\n")
