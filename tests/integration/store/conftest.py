"""Store tests that need a running node (the retention sweeper) reuse the SMTP tests' rig."""

from __future__ import annotations

from tests.integration.smtp.conftest import ca, node_factory  # noqa: F401 - fixtures
