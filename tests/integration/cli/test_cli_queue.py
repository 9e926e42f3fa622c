"""`mailrelay queue list | show` on rows inserted directly into the test database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from .conftest import CLI


def test_queue_list_and_show(cli: CLI, add_message: Callable[..., str]) -> None:
    now = time.time()
    body = b"Subject: hello\r\nFrom: sender@example.org\r\n\r\nthe body\r\n"
    trace = b"Received: from client.test\r\n\tby mx.test; \x1b[2J\r\n"
    add_message("QOLD", created_at=now - 7300, body=body, trace=b"")
    add_message("QNEW", created_at=now - 190, mail_from="", body=body, trace=trace,
                rcpts=[("a@x.test", "queued"), ("b@y.test", "delivered"), ("c@z.test", "queued")])

    lines = cli("queue", "list").out.splitlines()
    assert lines[0].split() == ["ID", "ACCOUNT", "FROM", "RECIPIENTS", "SIZE", "STATUS", "AGE"]
    assert lines[1].split() == ["QNEW", "alice", "<>", "a@x.test", "+2", str(len(trace + body)), "2", "queued,",
                                "1", "delivered", "3m"]
    assert lines[2].split() == ["QOLD", "alice", "sender@example.org", "rcpt@example.net",
                                str(len(body)), "queued", "2h"]

    limited = cli("queue", "list", "--limit", "1").out.splitlines()
    assert [line.split()[0] for line in limited[1:]] == ["QNEW", "(1"]
    assert limited[-1] == "(1 of 2 messages shown; use --limit)"

    data = json.loads(cli("queue", "list", "--json").out)
    assert [(m["id"], m["recipient_count"], m["status"]) for m in data] == [
        ("QNEW", 3, "2 queued, 1 delivered"), ("QOLD", 1, "queued")]

    shown = cli("queue", "show", "QNEW").out
    assert "queue id:  QNEW" in shown
    assert "from:      <> SIZE=120" in shown
    assert "tls:       TLSv1.3 TLS_AES_256_GCM_SHA384" in shown
    assert "  Subject: hello" in shown and "the body" not in shown
    assert "\x1b" not in shown and "\\x1b[2J" in shown  # client bytes cannot drive a terminal

    detail = json.loads(cli("queue", "show", "QNEW", "--json").out)
    assert detail["mail_params"] == {"SIZE": "120"}
    assert [(r["address"], r["status"], r["params"]) for r in detail["recipients"]] == [
        ("a@x.test", "queued", {"NOTIFY": "FAILURE"}),
        ("b@y.test", "delivered", {"NOTIFY": "FAILURE"}),
        ("c@z.test", "queued", {"NOTIFY": "FAILURE"})]
    assert detail["headers"].startswith("Received: from client.test\r\n\tby mx.test;")
