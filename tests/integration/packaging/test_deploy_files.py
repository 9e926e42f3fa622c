"""deploy/: the systemd unit, the container file and their configuration agree with each other
and with mailrelay's settings (a key renamed in settings/ breaks the shipped configuration)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailrelay.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
STATE = Path("/var/lib/mailrelay")


def _unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (DEPLOY / "mailrelay.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_the_shipped_configuration_is_valid_and_keeps_data_in_the_state_directory() -> None:
    settings = load_settings(DEPLOY / "mailrelay.toml", env={})
    assert settings.data_dir == STATE
    assert settings.server.demo_account is False
    unit = _unit()
    assert unit["StateDirectory"] == ["mailrelay"]  # /var/lib/mailrelay
    assert unit["ReadWritePaths"] == [str(STATE)]
    assert unit["WorkingDirectory"] == [str(STATE)]
    # SIGTERM to the main process alone; time for sessions, then workers, to finish.
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    stop = int(unit["TimeoutStopSec"][0])
    assert stop > 3 * settings.server.shutdown_timeout
    assert unit["ExecStart"] == ["/opt/mailrelay/bin/mailrelay -c /etc/mailrelay/mailrelay.toml serve"]
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["User"] == ["mailrelay"]


def test_the_container_runs_serve_as_a_user_with_the_data_on_a_volume() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER mailrelay$", text, re.M)
    assert f'VOLUME ["{STATE}"]' in text
    assert 'CMD ["mailrelay", "-c", "/etc/mailrelay/mailrelay.toml", "serve"]' in text
    assert re.search(r"^EXPOSE 25 465 587 8025$", text, re.M)
    # The listen address the image sets is one the settings accept.
    listen = re.search(r"MAILRELAY_HTTP_LISTEN=(\S+)", text)
    assert listen
    settings = load_settings(DEPLOY / "mailrelay.toml", env={"MAILRELAY_HTTP_LISTEN": listen.group(1)})
    assert settings.http.listen == "0.0.0.0:8025"
    assert "http://127.0.0.1:8025/readyz" in text  # the HEALTHCHECK asks the port the image listens on
    # Every file the build copies from the context is let through by .dockerignore.
    sources = {src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for src in line.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "src", "deploy/mailrelay.toml"}
    allowed = {line[1:] for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert sources <= allowed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this venv's copy.
    script = Path(sys.executable).parent / "mailrelay"
    unit = tmp_path / "mailrelay.service"
    unit.write_text((DEPLOY / "mailrelay.service").read_text().replace("/opt/mailrelay/bin/mailrelay", str(script)))
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "mailrelay.service" not in checked.stderr, checked.stderr  # no warning about our unit
