"""Sandbox tests reuse the delivery rig: a node on loopback, aiosmtpd MXs on 127.0.0.X, a test DNS,
and the CLI on the same database."""

from __future__ import annotations

from tests.integration.cli.conftest import cli, inproc  # noqa: F401 - fixtures
from tests.integration.delivery.conftest import mx_port, remote_mx  # noqa: F401 - fixtures
from tests.integration.smtp.conftest import ca, node_factory  # noqa: F401 - fixtures
