"""A PostgreSQL server of one test's own, which the test may crash and start again.

The suite's shared server (127.0.0.1:5432) serves every other test at the same time, so no test
may stop it. A test that needs the database itself to go away starts one of these: `initdb` in
a temporary folder (trust authentication, fsync on), then a postmaster on a port of the test's
own, run as this process's child; `crash` kills the postmaster and every backend with SIGKILL
(what the OOM killer or a power cut does to the database: the next start replays the WAL) and
`start` brings it back.

As root the server runs as the user `postgres` (PostgreSQL refuses to run as root), in a
folder made under the system's temporary directory and handed to that user.

Security: listens on 127.0.0.1 only, with trust authentication (any local user may connect
as any role while it runs); its folder is readable by its owner only and removed by `close`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAMS = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: _version(p), reverse=True)]
    for path in candidates:
        if all(os.access(path / name, os.X_OK) for name in PROGRAMS):
            return path
    return None


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def why_unusable() -> str | None:
    """None if a private server can run here, else why not (for a skip)."""
    if find_bindir() is None:
        return ("PostgreSQL server programs (initdb, pg_ctl, postgres) not found: neither "
                "`pg_config --bindir` nor /usr/lib/postgresql/*/bin has them (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no user `postgres` to run a PostgreSQL server as"
    return None


class PrivatePostgres:
    """A PostgreSQL server in a temporary folder, on 127.0.0.1:`port`, run as a child of this
    process (so that a crash is reaped at once, whatever the machine's init does)."""

    def __init__(self, port: int, *, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(why_unusable() or "no PostgreSQL server programs")
        self.bindir = found
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="mailrelay-pg-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None
        self.init_seconds = 0.0  # initdb
        self.start_seconds: list[float] = []  # each start until it accepted connections

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        t0 = time.monotonic()
        # --no-sync: initdb's own final flush of the new cluster; the server itself runs with
        # fsync on, and what crashes here are processes, not the machine.
        done = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                               "-E", "UTF8", "--locale=C", "--no-sync"], user=self._user, cwd=self.folder,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        self.init_seconds = time.monotonic() - t0

    def start(self, timeout: float = 60.0) -> float:
        """Start (after `init`, or after `crash`: crash recovery first) and wait until it
        accepts connections; the seconds that took."""
        t0 = time.monotonic()
        with self.logfile.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "max_connections=300",
                 "-c", "log_min_messages=warning"],
                user=self._user, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C of the test reaches the test, not the server
        deadline = t0 + timeout
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start (exit {self._proc.poll()}):\n{tail}")
            time.sleep(0.02)
        took = time.monotonic() - t0
        self.start_seconds.append(took)
        return took

    def _ready(self) -> bool:
        """postmaster.pid names our process and says "ready" (what pg_ctl -w waits for)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (self._proc is not None and len(lines) >= 8 and lines[0].strip() == str(self._proc.pid)
                and lines[7].strip() == "ready")

    def crash(self) -> None:
        """SIGKILL the postmaster and all its children at once: no shutdown, no checkpoint."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for victim in [proc.pid, *_children(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        proc.wait(30)

    def close(self) -> None:
        """Stop at once (if running) and delete the folder."""
        self.crash()
        shutil.rmtree(self.folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out
