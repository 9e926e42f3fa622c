"""Shared parts of the benchmarks: mailrelay, a private Postfix, bare aiosmtpd, load, /proc probes.

Security: every server started here listens on 127.0.0.1 only, runs under a time limit and is
stopped by the PID recorded at start; the private Postfix keeps its config and queue in a
temporary folder and never touches /etc/postfix's own instance. Scratch data (databases,
queues, spools, logs with the demo account's one-time password) stays in that temporary folder.

The bare aiosmtpd server comes from the shared yardstick kit, found at ../shared/bench relative
to the repo root (SMTPBENCH_KIT overrides), and runs in a venv made by the kit's setup-venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTSUPER = shutil.which("postsuper") or "/usr/sbin/postsuper"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# PostgreSQL schemas made for one run each are named like this (and dropped afterwards)
PG_SCHEMA_PREFIX = "mailrelay_bench_"


class BenchError(Exception):
    """A benchmark cannot run; the message says what to fix."""


def run_script(name: str, main: Callable[[], int]) -> NoReturn:
    """Exit with `main()`'s status: a BenchError as one line naming the script, Ctrl-C as 130."""
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


# ---------------------------------------------------------------- environment


def python_bin() -> str:
    """The interpreter that runs mailrelay: $PYTHON, else .venv/bin/python in the repo."""
    given = os.environ.get("PYTHON", ".venv/bin/python")
    path = Path(given)
    if not path.is_absolute() and "/" in given:
        path = REPO / path
    elif "/" not in given:
        found = shutil.which(given)
        if found is None:
            raise BenchError(f"PYTHON={given} is not on PATH")
        path = Path(found)
    if not os.access(path, os.X_OK):
        raise BenchError(f"{given} not found: run `make install` (creates .venv) or set PYTHON")
    return str(path)


def raise_nofile(want: int) -> int:
    """Lift RLIMIT_NOFILE to at least `want` (children inherit it); return the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft, hard = want, want
    if soft < min(want, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        soft = min(want, hard)
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def machine() -> dict[str, Any]:
    """What the numbers were measured on (no host names or paths)."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    pfv = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                         text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "cpu_model": model, "mem_gib": round(mem_kib / 1048576, 1),
            "kernel": platform.release(), "python_bench": platform.python_version(),
            "postfix": pfv, "git_commit": commit + ("+dirty-src" if dirty else "")}


def box_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def busy_pct(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    dt = b[1] - a[1]
    return round(100.0 * (b[0] - a[0]) / dt, 1) if dt else None


def save_json(prefix: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# ---------------------------------------------------------------- /proc probes


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    seen, stack = [pid], [pid]
    while stack:
        for kid in children(stack.pop()):
            if kid not in seen:
                seen.append(kid)
                stack.append(kid)
    return seen


def memory(pids: list[int]) -> dict[str, int]:
    """Summed PSS, RSS and USS (KiB) of processes, from smaps_rollup; vanished ones skipped."""
    tot = {"processes": 0, "pss_kib": 0, "rss_kib": 0, "uss_kib": 0}
    for pid in pids:
        vals: dict[str, int] = {}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                        vals[key] = int(rest.split()[0])
        except OSError:
            continue
        tot["processes"] += 1
        tot["pss_kib"] += vals.get("Pss", 0)
        tot["rss_kib"] += vals.get("Rss", 0)
        tot["uss_kib"] += vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)
    return tot


def cpu_seconds(pid: int, *, with_reaped: bool = False) -> float:
    """utime+stime of pid (plus, with_reaped, of its children it has already waited for)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process tree so far: live processes + children the root (master) has reaped.

    Reaped grandchildren are included in their parents' counts, so a delta between two calls
    is the CPU the whole tree used in between, even though Postfix's smtpd processes come and go.
    """
    return cpu_seconds(pid, with_reaped=True) + sum(cpu_seconds(p) for p in tree(pid)[1:])


def socket_fds(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
    return n



def wait_for_log(proc: subprocess.Popen, log: Path, marker: str, timeout: float) -> bool:  # type: ignore[type-arg]
    """True once `marker` appears in the server's log; False if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def terminate(proc: subprocess.Popen, grace: float) -> None:  # type: ignore[type-arg]
    """SIGTERM, wait up to `grace` seconds, then SIGKILL: every server we start stops."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

# ---------------------------------------------------------------- mailrelay

MAILRELAY_CONFIG = """\
# generated by bench/benchkit.py for one benchmark run
[server]
hostname = "bench.test"
data_dir = "data"
demo_account = true

[submission]
trusted_networks = ["127.0.0.0/8"]
trusted_account = "demo"
require_own_domain = false

{delivery}
[smtp]
max_connections_per_ip = 100000
idle_timeout = 600
{smtp_extra}
[storage]
url = "{storage_url}"

[listener.smtp]
listen = ["127.0.0.1:{port}"]

[listener.submission]
enabled = false

[listener.submissions]
enabled = false

[listener.alt]
enabled = false
"""

# The default [delivery] section: accept-only, nothing may leave this machine.
MAILRELAY_NO_DELIVERY = """\
[delivery]
# accept-only: the benchmark measures acceptance; nothing may leave this machine
enabled = false
"""

_PROBLEM = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Exception|[Ee]rror:")


class Mailrelay:
    """One mailrelay process on a fresh data dir, under `timeout`, stopped by PID."""

    def __init__(self, workdir: Path, port: int, *, time_limit: float,
                 smtp_extra: str = "", storage_url: str = "", delivery: str = "") -> None:
        """storage_url: "" for SQLite in the data dir, else a PostgreSQL URL (see PgSchema).

        delivery: the whole `[delivery]` section (and its sub-tables) as TOML; default
        MAILRELAY_NO_DELIVERY (accept-only).
        """
        self.workdir = workdir
        self.port = port
        self.time_limit = time_limit
        self.config = workdir / "mailrelay.toml"
        self.log = workdir / "server.log"
        self.db = workdir / "data" / "mailrelay.db"
        self.smtp_extra = smtp_extra
        self.storage_url = storage_url
        self.delivery = delivery or MAILRELAY_NO_DELIVERY
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the Python process (child of `timeout`)
        self.exit_code: int | None = None

    def start(self, python: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with open(self.log, "wb") as log:
            # `timeout` bounds the server's life even if this script dies; SIGTERM sent to it
            # is passed on to the server, which then stops gracefully.
            self._proc = subprocess.Popen(
                ["timeout", "-k", "10", str(int(self.time_limit)), python, "-m", "mailrelay",
                 "-c", str(self.config), "serve"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not wait_for_log(self._proc, self.log, "mailrelay ready as", 90):
            self.stop()
            tail = self.log.read_text(errors="replace")[-1500:]
            raise BenchError(f"mailrelay did not become ready on port {self.port}:\n{tail}")
        kids = children(self._proc.pid)
        self.pid = kids[0] if kids else self._proc.pid

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(MAILRELAY_CONFIG.format(port=self.port, smtp_extra=self.smtp_extra,
                                                       storage_url=self.storage_url,
                                                       delivery=self.delivery))

    def cli(self, python: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`mailrelay -c CONFIG ARGS...` on this instance's config (e.g. `domain add ...`)."""
        self.write_config()
        return subprocess.run([python, "-m", "mailrelay", "-c", str(self.config), *args],
                              cwd=self.workdir, capture_output=True, text=True, timeout=timeout)

    def recipient_status(self) -> dict[str, dict[str, int]]:
        """Recipients by status, of submitted messages ("sent") and of the bounce messages
        (DSNs, null sender) the server made itself ("dsn"). SQLite only; read-only, so it is
        fine while the server runs."""
        out: dict[str, dict[str, int]] = {"sent": {}, "dsn": {}}
        if not self.db.exists():
            return out
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            for dsn, status, n in con.execute(
                    "SELECT m.mail_from = '', r.status, count(*) FROM recipients r"
                    " JOIN messages m ON m.id = r.message_id GROUP BY 1, 2"):
                out["dsn" if dsn else "sent"][str(status)] = int(n)
            return out
        finally:
            con.close()

    def stop(self, timeout: float = 60.0) -> int | None:
        proc = self._proc
        if proc is None:
            return self.exit_code
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                proc.kill()
                proc.wait(10)
        self.exit_code = proc.returncode
        self._proc = None
        return self.exit_code

    def count_messages(self) -> int | None:
        if self.storage_url:
            return pg_count(self.storage_url, "messages")
        if not self.db.exists():
            return None
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            con.close()

    def problems(self, limit: int = 20) -> list[str]:
        """Log lines that look wrong (warnings, errors, tracebacks)."""
        if not self.log.exists():
            return []
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                 if _PROBLEM.search(ln) and "password" not in ln]
        if len(lines) > limit:
            lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
        return lines


# ---------------------------------------------------------------- Postfix

POSTFIX_MAIN = """\
# private benchmark instance - generated by bench/benchkit.py; /etc/postfix is not used
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = {daemons}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = /tmp
syslog_name = postfix-bench
myhostname = bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
append_dot_mydomain = no
readme_directory = no
"""

# Accept and queue only, like mailrelay without its delivery side: every message goes to the
# hold queue (cleanup fsyncs it there before smtpd answers 250) and qmgr never picks it up.
# The relayhost is never contacted (discard port; smtp is also a deferred transport).
POSTFIX_HOLD = """\
smtpd_client_restrictions = check_client_access static:HOLD
relayhost = [127.0.0.1]:9
defer_transports = smtp
"""

# Relay everything to one next hop on loopback (a counting smtp-sink), as fast as it goes.
POSTFIX_RELAY = """\
relayhost = [127.0.0.1]:{relay_port}
default_destination_concurrency_limit = {concurrency}
smtp_destination_concurrency_limit = {concurrency}
default_process_limit = {process_limit}
"""

POSTFIX_MASTER = """\
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n  -       n       -       {maxproc} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
smtp      unix  -       -       n       -       -       smtp
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_PF_PROBLEM = re.compile(r"warning:|fatal:|panic:|error:|reject:")


class Postfix:
    """A private Postfix (own config and queue under `d`), master run by us and stopped by PID."""

    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(self, d: Path, port: int, *, maxproc: int = 200, time_limit: float,
                 relay_port: int = 0, relay_concurrency: int = 20) -> None:
        """relay_port 0: hold every message (accept-only); else relay all to 127.0.0.1:relay_port
        with up to relay_concurrency connections (default/smtp_destination_concurrency_limit)."""
        if os.geteuid() != 0:
            raise BenchError("the Postfix comparison needs root (Postfix drops to user postfix)")
        self.d = d
        self.etc = d / "etc"
        self.port = port
        self.maxproc = maxproc
        self.time_limit = time_limit
        self.relay_port = relay_port
        self.relay_concurrency = relay_concurrency
        self._proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        """Write main.cf/master.cf and the queue; `d`'s parents must be searchable by postfix."""
        for sub in ("etc", "queue", "data"):
            (self.d / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.d / "data", "postfix")
        tail = POSTFIX_HOLD if not self.relay_port else POSTFIX_RELAY.format(
            relay_port=self.relay_port, concurrency=self.relay_concurrency,
            process_limit=max(100, self.relay_concurrency + 10))
        (self.etc / "main.cf").write_text(POSTFIX_MAIN.format(d=self.d, daemons=POSTFIX_DAEMONS)
                                          + tail)
        (self.etc / "master.cf").write_text(POSTFIX_MASTER.format(port=self.port,
                                                                  maxproc=self.maxproc))
        # `postfix check` creates the queue directories with the right owners and modes.
        subprocess.run([POSTFIX, "-c", str(self.etc), "check"], check=True)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else 0

    def start(self) -> None:
        # master(8) without -w stays in the foreground, so its PID is ours; -e is its own
        # time limit (it exits after that many seconds even if we never stop it).
        self._proc = subprocess.Popen(
            [POSTFIX_DAEMONS + "/master", "-c", str(self.etc), "-e", str(int(self.time_limit))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except BenchError:
            self.stop()
            raise BenchError(f"postfix did not start (every folder above {self.d} must be"
                             f" searchable by user postfix); see {self.d}/maillog") from None

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        terminate(proc, 30)  # master passes SIGTERM on to its children
        self._proc = None

    def queue_counts(self) -> dict[str, int]:
        counts = {}
        for q in self.QUEUES:
            n = 0
            for _root, _dirs, files in os.walk(self.d / "queue" / q):
                n += len(files)
            counts[q] = n
        return counts

    def purge(self) -> None:
        """Delete every queued message, so the next run starts on an empty queue."""
        subprocess.run([POSTSUPER, "-c", str(self.etc), "-d", "ALL"], capture_output=True,
                       check=True, timeout=300)
        left = sum(self.queue_counts().values())
        if left:
            raise BenchError(f"postfix queue still holds {left} files after postsuper -d ALL")

    def problems(self, limit: int = 20) -> list[str]:
        log = self.d / "maillog"
        if not log.exists():
            return []
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if _PF_PROBLEM.search(ln)]
        if len(lines) > limit:
            lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
        return lines

    def truncate_log(self) -> None:
        log = self.d / "maillog"
        if log.exists():
            with open(log, "r+b") as f:
                f.truncate(0)


# ---------------------------------------------------------------- PostgreSQL (optional)

PSQL = shutil.which("psql") or "/usr/bin/psql"


def _psql(url: str, sql: str, timeout: float = 120) -> str:
    if not url.startswith(("postgresql://", "postgres://")):
        raise BenchError(f"--storage-url must be postgresql://..., got {url.split('://')[0]}://")
    p = subprocess.run([PSQL, url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise BenchError(f"psql failed: {p.stderr.strip()[-500:]}")
    return p.stdout.strip()


def pg_count(url: str, table: str) -> int | None:
    try:
        return int(_psql(url, f"SELECT count(*) FROM {table}"))
    except (BenchError, ValueError, subprocess.TimeoutExpired):
        return None


class PgSchema:
    """A fresh schema in a PostgreSQL database for one mailrelay run, dropped by drop().

    `url` is what mailrelay gets: the base URL with `options=-csearch_path=<schema>`, so its
    migrations create their tables in the new schema and nothing else in the database is touched.
    """

    def __init__(self, base_url: str, tag: str) -> None:
        self.base_url = base_url
        safe = re.sub(r"[^a-z0-9_]", "_", tag.lower())
        self.schema = f"{PG_SCHEMA_PREFIX}{os.getpid()}_{safe}"
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.schema}"

    def create(self) -> None:
        _psql(self.base_url, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE;"
                             f" CREATE SCHEMA {self.schema}")

    def drop(self) -> None:
        with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
            _psql(self.base_url, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


def pg_version(base_url: str) -> str:
    try:
        return _psql(base_url, "SHOW server_version") + ", synchronous_commit=" + _psql(
            base_url, "SHOW synchronous_commit")
    except (BenchError, subprocess.TimeoutExpired):
        return ""


# ---------------------------------------------------------------- bare aiosmtpd (yardstick kit)


def kit_dir() -> Path:
    """The shared yardstick kit: $SMTPBENCH_KIT, else ../shared/bench from the repo root."""
    given = os.environ.get("SMTPBENCH_KIT")
    kit = Path(given) if given else REPO.parent / "shared" / "bench"
    if not (kit / "aiosmtpd-server").is_file() or not (kit / "setup-venv").is_file():
        raise BenchError(f"the yardstick kit (aiosmtpd-server, setup-venv) is not in {kit};"
                         " set SMTPBENCH_KIT to its folder")
    return kit


def aiosmtpd_python(venv: Path) -> str:
    """The interpreter for the kit's aiosmtpd-server.

    $SMTPBENCH_PY (the kit's own variable) if set; else the kit's setup-venv is run on `venv`
    (it creates it if needed and installs the pinned aiosmtpd, aiosmtplib and uvloop).
    """
    given = os.environ.get("SMTPBENCH_PY")
    if given:
        if not os.access(given, os.X_OK):
            raise BenchError(f"SMTPBENCH_PY={given} is not executable")
        return given
    try:
        p = subprocess.run([str(kit_dir() / "setup-venv"), str(venv)], capture_output=True,
                           text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise BenchError(f"setup-venv {venv} took more than 600 s") from None
    python = venv / "bin" / "python"
    if p.returncode or not os.access(python, os.X_OK):
        raise BenchError(f"setup-venv {venv} failed:\n{(p.stdout + p.stderr).strip()[-1500:]}")
    return str(python)


def aiosmtpd_versions(python: str) -> str:
    p = subprocess.run([python, "-c", "import sys, aiosmtpd, uvloop; print('Python',"
                        " sys.version.split()[0], 'aiosmtpd', aiosmtpd.__version__,"
                        " 'uvloop', uvloop.__version__)"], capture_output=True, text=True)
    return p.stdout.strip() or p.stderr.strip()[-300:]


class Aiosmtpd:
    """The kit's bare aiosmtpd server on a fresh spool file, stopped by PID.

    It appends every message (envelope + content) to one spool file and answers 250 only after
    the chosen durability step; "group": one fsync in a worker thread covers every message
    written before it started. --max-seconds is its own time limit.
    """

    def __init__(self, workdir: Path, port: int, *, time_limit: float,
                 durability: str = "group", use_uvloop: bool = True) -> None:
        self.workdir = workdir
        self.port = port
        self.time_limit = time_limit
        self.durability = durability
        self.use_uvloop = use_uvloop
        self.spool = workdir / "spool"
        self.log = workdir / "server.log"
        self.pidfile = workdir / "pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.exit_code: int | None = None

    def start(self, python: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [python, str(kit_dir() / "aiosmtpd-server"), "--host", "127.0.0.1",
               "--port", str(self.port), "--durability", self.durability,
               "--store", str(self.spool), "--pidfile", str(self.pidfile),
               "--max-seconds", str(int(self.time_limit))]
        if self.use_uvloop:
            cmd.append("--uvloop")
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log)
        if not wait_for_log(self._proc, self.log, "aiosmtpd-server: pid", 60):
            self.stop()
            tail = self.log.read_text(errors="replace")[-1500:]
            raise BenchError(f"aiosmtpd-server did not start on port {self.port}:\n{tail}")
        self.pid = int(self.pidfile.read_text().split()[0])
        if self.pid != self._proc.pid:
            self.stop()
            raise BenchError(f"aiosmtpd-server wrote PID {self.pid}, started {self._proc.pid}")
        wait_port(self.port)

    def stop(self, timeout: float = 60.0) -> int | None:
        proc = self._proc
        if proc is None:
            return self.exit_code
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it stops its Controller and closes the spool
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.exit_code = proc.returncode
        self._proc = None
        return self.exit_code

    def count_messages(self) -> int | None:
        """Records in the spool file: each starts with `From <sender>` and `X-Rcpt-To: ...`."""
        if not self.spool.exists():
            return None
        n, prev_from = 0, False
        with open(self.spool, "rb") as f:
            for line in f:
                if prev_from and line.startswith(b"X-Rcpt-To: "):
                    n += 1
                prev_from = line.startswith(b"From ")
        return n

    def reported(self) -> dict[str, int]:
        """What the server printed when it stopped: messages handled and fsyncs done."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        m = re.search(r"stopped; messages=(\d+)(?: fsyncs=(\d+))?", text)
        if not m:
            return {}
        out = {"messages": int(m.group(1))}
        if m.group(2):
            out["fsyncs"] = int(m.group(2))
        return out

    def problems(self, limit: int = 20) -> list[str]:
        if not self.log.exists():
            return []
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                 if _PROBLEM.search(ln)]
        if len(lines) > limit:
            lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
        return lines


# ---------------------------------------------------------------- counting sink (fake MX)

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port, counting (-c), under `timeout`, stopped by PID.

    -c streams "... mesg=N" counter records (CR-separated) to its stdout, a file here; count()
    reads the last one. With `dump`, every message is also appended to that one file (-D), so
    it can be inspected afterwards (headers such as DKIM-Signature, duplicates).
    """

    def __init__(self, workdir: Path, port: int, *, time_limit: float, dump: bool = False,
                 max_conn: int = 1024) -> None:
        self.workdir = workdir
        self.port = port
        self.time_limit = time_limit
        self.dump = workdir / "sink.dump" if dump else None
        self.max_conn = max_conn
        self.log = workdir / "sink.log"
        self.err = workdir / "sink.err"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """smtp-sink itself (the child of `timeout`), for its CPU time."""
        if self._proc is None:
            return 0
        kids = children(self._proc.pid)
        return kids[0] if kids else self._proc.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["-c", "-m", str(self.max_conn), "-h", "sink.bench.test"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
            self.workdir.chmod(0o777)  # its dump file is written as nobody
        if self.dump is not None:
            args += ["-D", str(self.dump)]  # no % in the name: one file
        with open(self.log, "wb") as out, open(self.err, "wb") as err:
            self._proc = subprocess.Popen(
                ["timeout", "-k", "5", str(int(self.time_limit)), SMTP_SINK, *args,
                 f"inet:127.0.0.1:{self.port}", "1024"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            wait_port(self.port, 10)  # this probe is a session, not a message
        except BenchError:
            self.stop()
            raise BenchError(f"smtp-sink did not start: {self.err.read_text(errors='replace')}")\
                from None

    def count(self) -> int:
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 512))
                tail = f.read()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def wait_count(self, n: int, timeout: float, interval: float = 0.01) -> int:
        deadline = time.monotonic() + timeout
        c = self.count()
        while c < n and time.monotonic() < deadline:
            time.sleep(interval)
            c = self.count()
        return c

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        terminate(proc, 10)  # timeout(1) passes SIGTERM on to smtp-sink
        self._proc = None

    def dumped(self) -> dict[str, int]:
        """From the dump file: messages (each record starts with smtp-sink's X-Client-Addr
        line), how many carry a DKIM-Signature header (one or more), distinct Message-Id values
        (fewer than messages means duplicates: smtp-source numbers every message it sends) and
        null-sender messages (bounces made by the relay)."""
        if self.dump is None or not self.dump.exists():
            return {}
        msgs = dkim = null_sender = 0
        ids: set[bytes] = set()
        in_head = signed = False
        with open(self.dump, "rb") as f:
            for line in f:
                if line.startswith(b"X-Client-Addr: "):
                    msgs += 1
                    in_head, signed = True, False
                elif not in_head:
                    continue
                elif line in (b"\n", b"\r\n"):
                    in_head = False
                elif line.startswith(b"X-Mail-Args: <>"):
                    null_sender += 1  # a bounce (DSN) made by the relay, not a sent message
                elif line[:15].lower() == b"dkim-signature:":
                    if not signed:
                        dkim += 1
                    signed = True
                elif line[:11].lower() == b"message-id:":
                    ids.add(line[11:].strip())
        return {"messages": msgs, "dkim_signed": dkim, "distinct_message_ids": len(ids),
                "null_sender": null_sender}


# ---------------------------------------------------------------- load


def unlimited(srv: Mailrelay, python: str) -> None:
    """Put demo on the unlimited plan: a run sends more than the free plan's 200 a day. Before
    the first message, which is when the server reads the trusted account (and its plan)."""
    p = srv.cli(python, "account", "plan", "demo", "unlimited")
    if p.returncode:
        raise BenchError(f"mailrelay account plan demo unlimited failed: {(p.stdout + p.stderr).strip()[-800:]}")


def smtp_source_cmd(port: int, *, n: int, conc: int, size: int, reuse: bool,
                    sender: str = "sender@example.com") -> list[str]:
    """smtp-source sending N messages of SIZE body bytes at concurrency C, with a -c counter."""
    cmd = [SMTP_SOURCE, "-c", "-s", str(conc), "-m", str(n), "-l", str(size),
           "-M", "client.bench.test", "-f", sender, "-t", "rcpt@example.net",
           "-S", "mailrelay bench"]
    if reuse:
        cmd.append("-d")
    cmd.append(f"inet:127.0.0.1:{port}")
    return cmd


def source_completed(out: bytes) -> int:
    """-c prints a running count of completed DATA commands, separated by CR: the last one."""
    nums = [x for x in out.replace(b"\n", b"\r").split(b"\r") if x.strip().isdigit()]
    return int(nums[-1]) if nums else 0


def smtp_source(port: int, *, n: int, conc: int, size: int, reuse: bool,
                timeout: float) -> dict[str, Any]:
    """Run Postfix's smtp-source once; wall time is from its start to its exit."""
    cmd = smtp_source_cmd(port, n=n, conc=conc, size=size, reuse=reuse)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, e.stdout or b"", (e.stderr or b"") + b" (timed out)"
    wall = time.monotonic() - t0
    done = source_completed(out)
    return {"rc": rc, "wall_s": round(wall, 3), "completed": done,
            "rate": round(done / wall, 1) if wall > 0 else 0.0,
            "stderr": err.decode(errors="replace").strip()[-600:],
            "cmd": " ".join(["smtp-source", *cmd[1:]])}
