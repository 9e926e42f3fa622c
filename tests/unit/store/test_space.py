"""DiskSpace: one statvfs a second at most, one log line per change of state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailrelay.store.space import DiskSpace, for_url


class FakeFS:
    """A file system whose free space the test sets; counts how often it is asked."""

    def __init__(self, free: int) -> None:
        self.free, self.reads, self.broken = free, 0, False

    def __call__(self, path: Path) -> os.statvfs_result:
        self.reads += 1
        if self.broken:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, ...: free = f_bavail * f_frsize
        return os.statvfs_result((4096, 1024, 10**9, self.free // 1024 + 7, self.free // 1024,
                                  0, 0, 0, 0, 255))


def test_reading_is_reused_for_a_second() -> None:
    now = [100.0]
    fs = FakeFS(free=10_000 * 1024)
    space = DiskSpace(Path("/q"), min_free=5000 * 1024, clock=lambda: now[0], statvfs=fs)
    assert space.room_for(0) and space.room_for(5000 * 1024)
    assert not space.room_for(5001 * 1024)
    assert fs.reads == 1
    fs.free = 0
    now[0] += 0.99
    assert space.room_for(0), "still the reading of less than a second ago"
    now[0] += 0.01
    assert not space.room_for(0) and fs.reads == 2


def test_low_and_back_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    fs = FakeFS(free=0)
    space = DiskSpace(Path("/q"), min_free=1024, clock=lambda: now[0], statvfs=fs)
    for _ in range(5):
        assert not space.room_for(0)
        now[0] += 1
    fs.free = 4096
    for _ in range(5):
        assert space.room_for(0)
        now[0] += 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("queue storage low: 0 bytes free in /q")
    assert messages[1].startswith("queue storage back above storage.min_free: 4096 bytes")


def test_unreadable_file_system_does_not_refuse(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    fs = FakeFS(free=0)
    fs.broken = True
    space = DiskSpace(Path("/gone"), min_free=1024, clock=lambda: now[0], statvfs=fs)
    for _ in range(3):
        assert space.room_for(10**9)
        now[0] += 1
    assert len(caplog.records) == 1 and "cannot read the free space of /gone" in caplog.text


def test_only_sqlite_files_with_min_free_are_checked(tmp_path: Path) -> None:
    space = for_url(f"sqlite:///{tmp_path}/db/mailrelay.db", min_free=1)
    assert space is not None and space.directory == tmp_path / "db"
    assert for_url(f"sqlite:///{tmp_path}/mailrelay.db", min_free=0) is None
    assert for_url("sqlite://", min_free=1) is None
    assert for_url("sqlite:///:memory:", min_free=1) is None
    assert for_url("postgresql://app:pw@db/mail", min_free=1) is None
    assert for_url("postgresql+psycopg://app@db/mail", min_free=1) is None


def test_real_file_system(tmp_path: Path) -> None:
    space = DiskSpace(tmp_path, min_free=1)
    free = space.free()
    assert free is not None and free > 0
    assert not DiskSpace(tmp_path, min_free=2**60).room_for(0)
