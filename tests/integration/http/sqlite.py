"""`from tests.integration.http.sqlite import sqlite_only` in a test module runs it on SQLite alone.

For modules that test the HTTP layer itself (shapes, auth, errors, the client libraries): the
services below it, and every HTTP module that reaches SQL of its own (activity, suppressions,
templates, batches, domains, webhooks, admin), run on both databases. Not in conftest.py,
where it would apply to the whole directory.
"""

from __future__ import annotations

import pytest


@pytest.fixture(name="db_url")
def sqlite_only(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'mailrelay.db'}"
