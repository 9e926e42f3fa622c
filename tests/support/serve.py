"""`mailrelay serve` and the CLI as real processes, with a config written for a test.

Shared by the tests that start nodes (tests/integration/serve, delivery, quota) and by
bench/cluster.py, which runs the cluster scenario (tests/support/cluster.py) at soak size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class Server:
    """One `mailrelay serve` process, its output in a log file of its own under `cwd`."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str]) -> None:
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        self.fh = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailrelay", *args], cwd=cwd, env=env,
                                     stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "mailrelay ready" in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"server not ready:\n{self.text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.fh.close()


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRELAY_")}
    return env


def merge_toml(base: str, extra: str) -> str:
    """`base` with the tables and keys of `extra` laid over it (TOML forbids repeating them)."""
    sections: dict[str, dict[str, str]] = {}
    for text in (base, extra):
        current = ""
        for line in text.strip().splitlines():
            stripped = line.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                current = stripped
                sections.setdefault(current, {})
            elif stripped:
                key = stripped.split("=", 1)[0].strip()
                sections.setdefault(current, {})[key] = line
    return "".join(f"{name}\n" + "\n".join(lines.values()) + "\n" for name, lines in sections.items())


def write_config(tmp_path: Path, db_url: str, port: int, extra: str = "") -> Path:
    config = tmp_path / "mailrelay.toml"
    config.write_text(merge_toml(f"""
[server]
hostname = "mx.mailrelay.test"
shutdown_timeout = 10
[storage]
url = "{db_url}"
[submission]
trusted_networks = ["127.0.0.0/8"]
trusted_account = "demo"
require_own_domain = false
[listener.smtp]
listen = ["127.0.0.1:{port}"]
[listener.submission]
enabled = false
[listener.submissions]
enabled = false
[listener.alt]
enabled = false
[delivery]
enabled = false
[webhooks]
allow_private_targets = true
[http]
enabled = false
""", extra))
    return config


def run_cli(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailrelay", "-c", str(config), *args], cwd=tmp_path,
                          env=base_env(tmp_path), capture_output=True, text=True, timeout=60)
