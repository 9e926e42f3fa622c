"""SendGrid's Node.js library (@sendgrid/mail 8.1.6), unchanged but for its base URL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.http.conftest import APINode
from tests.integration.http.sqlite import sqlite_only

NODE_DIR = Path(__file__).parents[2] / "node"

__all__ = ["sqlite_only"]  # the layer is tested on SQLite; services run on both databases


def test_sendgrid_node_client_sends_one_mail_and_gets_202(api: APINode) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@sendgrid" / "mail").is_dir():
        if os.environ.get("MAILRELAY_TEST_REQUIRE_NODE"):
            pytest.fail("node or @sendgrid/mail missing: `make test` runs npm ci in tests/node")
        pytest.skip("node or @sendgrid/mail not installed (make test installs them)")
    done = subprocess.run([node, "send.js"], cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MAILRELAY_URL": api.url, "SENDGRID_API_KEY": api.key()})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 202, (result, done.stderr)
    [stored] = api.node.stored()
    assert stored["recipients"][0]["address"] == "node@example.net"
    assert json.loads(stored["tags"])["x_message_id"] == result["messageId"]
