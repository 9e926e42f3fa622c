"""The wheel that `pip install .` builds runs `mailrelay serve` away from the repository: its
templates, static files and migrations are inside the package, not read from the source tree;
and it runs with the configuration deploy/ ships for the systemd unit and the container.

The wheel is built offline from a copy of the working tree (`--no-build-isolation`: the test
venv's setuptools), so the repository gets no build/ or egg-info folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailrelay.store.migrate import head_revision
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "src" / "mailrelay"
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("mailrelay-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _shipped(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc" and path.is_file()


def test_the_wheel_holds_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("mailrelay/py.typed", "mailrelay/web/templates/base.html", "mailrelay/web/templates/login.html",
                 "mailrelay/web/static/dashboard.css", "mailrelay/store/migrations/env.py",
                 "mailrelay/store/migrations/script.py.mako", "mailrelay/store/migrations/versions/__init__.py"):
        assert must in names, must
    versions = "mailrelay/store/migrations/versions/"
    assert any(n.startswith(f"{versions}0001_") for n in names)
    assert any(n.startswith(f"{versions}{head_revision()}_") for n in names), "the head migration"
    # Everything in the source package (a new template, static file or migration included).
    source = {f"mailrelay/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*") if _shipped(p)}
    assert source - names == set()
    entry_points = zipfile.ZipFile(wheel).read("mailrelay-0.1.0.dist-info/entry_points.txt").decode()
    assert "mailrelay = mailrelay.cli.main:main" in entry_points


class _Serve:
    def __init__(self, cwd: Path, argv: list[str], env: dict[str, str]) -> None:
        self.log = cwd / "serve.log"
        self.fh = self.log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.text()}")
            assert time.monotonic() < deadline, f"no {line!r} in:\n{self.text()}"
            time.sleep(0.05)


@pytest.fixture
def serve_processes() -> Iterator[list[_Serve]]:
    started: list[_Serve] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)
        s.fh.close()


def test_the_installed_wheel_serves_from_outside_the_repository(
        wheel: Path, tmp_path: Path, serve_processes: list[_Serve]) -> None:
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                                "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    run = tmp_path / "run"
    run.mkdir()
    assert not run.resolve().is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILRELAY_", "PYTHON"))}
    env["PYTHONPATH"] = str(target)  # the wheel's copy before the venv's editable install
    where = subprocess.run([sys.executable, "-c", "import mailrelay; print(mailrelay.__file__)"], cwd=run,
                           env=env, capture_output=True, text=True, timeout=30)
    assert Path(where.stdout.strip()).resolve().is_relative_to(target.resolve()), where.stdout + where.stderr

    # The configuration deploy/ ships (systemd and container), moved onto loopback ports and a
    # data folder of the test's by environment variables, as the container image does.
    shutil.copy2(DEPLOY / "mailrelay.toml", run / "mailrelay.toml")
    ports = {name: free_port() for name in ("SMTP", "SUBMISSION", "SUBMISSIONS", "HTTP")}
    for name in ("SMTP", "SUBMISSION", "SUBMISSIONS"):
        env[f"MAILRELAY_LISTENER_{name}_LISTEN"] = f"127.0.0.1:{ports[name]}"
    http_port = ports["HTTP"]
    env |= {"MAILRELAY_SERVER_DATA_DIR": str(run / "data"), "MAILRELAY_SERVER_SHUTDOWN_TIMEOUT": "10",
            "MAILRELAY_HTTP_LISTEN": f"127.0.0.1:{http_port}", "MAILRELAY_HTTP_PROCESSES": "1",
            "MAILRELAY_DELIVERY_PROCESSES": "1"}
    # The console script pip wrote into the target (as the entry point of an installed package).
    server = _Serve(run, [str(target / "bin" / "mailrelay"), "-c", "mailrelay.toml", "serve"], env)
    serve_processes.append(server)
    server.wait_for("mailrelay ready")
    server.wait_for("HTTP API listening")

    base = f"http://127.0.0.1:{http_port}"
    login = httpx.get(f"{base}/login", trust_env=False, timeout=10)
    assert login.status_code == 200, login.text
    assert '<form class="signin" method="post" action="/login">' in login.text
    assert 'href="/static/dashboard.css"' in login.text
    css = httpx.get(f"{base}/static/dashboard.css", trust_env=False, timeout=10)
    assert css.status_code == 200
    assert css.content == (target / "mailrelay" / "web" / "static" / "dashboard.css").read_bytes()

    database = run / "data" / "mailrelay.db"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
    assert (run / "data" / "tls" / "cert.pem").exists()

    # The container's HEALTHCHECK command, against this server's port: healthy now, not once stopped.
    health = re.search(r"^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", (DEPLOY / "Containerfile").read_text(), re.M)
    assert health, "no HEALTHCHECK CMD in deploy/Containerfile"
    probe = [sys.executable if arg == "python" else arg.replace(":8025/", f":{http_port}/")
             for arg in json.loads(health.group(1))]
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}  # none in the container either
    assert subprocess.run(probe, env=env, cwd=run, capture_output=True, timeout=30).returncode == 0

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0, server.text()
    assert subprocess.run(probe, env=env, cwd=run, capture_output=True, timeout=30).returncode != 0
    assert "Traceback" not in server.text(), server.text()
