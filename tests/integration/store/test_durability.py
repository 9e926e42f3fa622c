"""What a commit survives. The delivery workers' engine (flush_commits=False) lets SQLite return
before the disk has the WAL, which only a power cut can take; on PostgreSQL every commit is
synchronous, for an asynchronous one waits in the server's own memory and a crash of the
database server alone loses it (seen: delivered recipients left leased, sent again later)."""

from __future__ import annotations

import pytest

from mailrelay.store.db import create_engine


@pytest.mark.parametrize("flush", [True, False])
def test_what_a_commit_waits_for(db_url: str, flush: bool) -> None:
    engine = create_engine(db_url, flush_commits=flush)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
            else:  # 2: FULL, fsync at every commit; 1: NORMAL, at checkpoints
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == (2 if flush else 1)
    finally:
        engine.dispose()
