"""A small file system of its own for a test that must fill one: a tmpfs, mounted as root.

Filling the file system the test suite runs on would fail every other test running beside it,
and the temporary directory's free space is whatever the machine has. A tmpfs of a few MiB is
full in milliseconds and gone with the test. Mounting needs root (CI runs as root); elsewhere
the test is skipped, saying why. Unmounted however the test ends; lazily if something still
holds it open (a server the test failed to stop), so that no mount is ever left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_bytes(path: Path) -> int:
    """What an unprivileged writer may still use (f_bavail), as mailrelay.store.space reads it."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: int) -> Iterator[Path]:
    """`path` (created) with a tmpfs of `size` bytes mounted on it, for the block's duration."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs to fill (CI runs the suite as root)")
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("needs mount(8) and umount(8) to mount a small tmpfs to fill")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:  # a container without CAP_SYS_ADMIN, say
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        if subprocess.run([umount, str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run([umount, "-l", str(path)], capture_output=True, timeout=30)


class Filler:
    """One file that takes the file system's free space down to what a test wants left."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "filler"

    def leave(self, wanted: int) -> int:
        """Grow or shrink the filler until about `wanted` bytes are free; what is free then."""
        with self.path.open("ab") as fh:
            for _ in range(20):
                size = os.fstat(fh.fileno()).st_size
                target = max(0, size + free_bytes(self.directory) - wanted)
                try:
                    if target < size:
                        fh.truncate(target)
                    elif target > size:
                        os.posix_fallocate(fh.fileno(), size, target - size)  # the pages, taken now
                except OSError as exc:  # a server wrote between the reading and the filling
                    if exc.errno != errno.ENOSPC:
                        raise
                    continue
                return free_bytes(self.directory)
        raise AssertionError(f"could not leave {wanted} bytes free in {self.directory}")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
