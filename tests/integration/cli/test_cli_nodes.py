"""`mailrelay node list`: which delivery processes hold leases, and whether they are alive."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from mailrelay.store.db import create_engine
from mailrelay.store.schema import nodes, recipients
from tests.integration.cli.conftest import CLI


def test_lists_each_process_with_its_heartbeat_and_leases(cli: CLI, db_url: str,
                                                          add_message: Callable[..., str]) -> None:
    assert cli("node", "list").out.strip() == \
        "no delivery process is running (none has a heartbeat in this database)"
    add_message("Q1", rcpts=[("a@x.test", "queued"), ("b@x.test", "queued"), ("c@x.test", "inbound")])
    now = time.time()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(nodes.insert(), [
            {"name": "mx1.10.aaaaaa-d0", "host": "mx1", "pid": 10, "local_id": None, "started_at": now - 7200,
             "heartbeat_at": now - 2},
            {"name": "mx2.20.bbbbbb-d0", "host": "mx2", "pid": 20, "local_id": None, "started_at": now - 60,
             "heartbeat_at": now - 600}])
        for address, owner in (("a@x.test", "mx1.10.aaaaaa-d0"), ("b@x.test", "mx1.10.aaaaaa-d0"),
                               ("c@x.test", "mx1.10.aaaaaa-d0/inbound")):
            conn.execute(recipients.update().where(recipients.c.address == address).values(lease_owner=owner))
    engine.dispose()
    table = cli("node", "list")
    assert table.code == 0, table.err
    header, first, second = table.out.strip().splitlines()
    assert header.split() == ["NAME", "HOST", "PID", "STARTED", "(UTC)", "HEARTBEAT", "STATE", "LEASED"]
    assert first.split()[:3] == ["mx1.10.aaaaaa-d0", "mx1", "10"] and first.split()[-3:] == ["ago", "alive", "3"]
    assert second.split()[:3] == ["mx2.20.bbbbbb-d0", "mx2", "20"] and second.split()[-2:] == ["silent", "0"]
    listed = json.loads(cli("node", "list", "--json").out)
    assert [(n["name"], n["state"], n["leased"]) for n in listed] == [
        ("mx1.10.aaaaaa-d0", "alive", 3), ("mx2.20.bbbbbb-d0", "silent", 0)]
