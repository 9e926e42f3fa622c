"""QueueReader over rows inserted directly, on both databases."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from mailrelay.spool.reader import QueueReader

T0 = 1_700_000_000.0


def test_empty_queue(engine: sa.Engine) -> None:
    reader = QueueReader(engine)
    assert reader.count() == 0
    assert reader.list() == []
    assert reader.show("NOSUCHID") is None


def test_list_is_newest_first_with_status_summaries(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", created_at=T0)
    add_message("Q2", created_at=T0 + 20, account="bob", mail_from="",
                rcpts=[("a@x.test", "queued"), ("b@y.test", "delivered"), ("c@z.test", "queued")])
    add_message("Q3", created_at=T0 + 10, rcpts=[("d@x.test", "bounced"), ("e@x.test", "bounced")])
    reader = QueueReader(engine)
    entries = reader.list()
    assert [e.id for e in entries] == ["Q2", "Q3", "Q1"]
    q2 = entries[0]
    assert (q2.account, q2.mail_from, q2.recipient_count) == ("bob", "", 3)
    assert q2.recipients == ("a@x.test", "b@y.test", "c@z.test")
    assert q2.status == "2 queued, 1 delivered"
    assert q2.created_at == T0 + 20
    assert entries[1].status == "bounced"
    assert entries[2].status == "queued" and entries[2].account == "alice"
    assert entries[2].size == len(b"Received: from client.test by mx.test\r\n") + len(
        b"Subject: hello\r\nFrom: sender@example.org\r\n\r\nthe body\r\n")
    assert [e.id for e in reader.list(limit=2)] == ["Q2", "Q3"]
    assert reader.count() == 3


def test_show_has_envelope_session_and_headers_but_not_the_body(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", rcpts=[("a@x.test", "queued"), ("b@y.test", "deferred")],
                mail_params='{"SIZE": "120", "SMTPUTF8": null}')
    m = QueueReader(engine).show("Q1")
    assert m is not None
    assert (m.id, m.account, m.mail_from) == ("Q1", "alice", "sender@example.org")
    assert m.mail_params == {"SIZE": "120", "SMTPUTF8": None}
    assert [(r.address, r.status, r.params) for r in m.recipients] == [
        ("a@x.test", "queued", {"NOTIFY": "FAILURE"}),
        ("b@y.test", "deferred", {"NOTIFY": "FAILURE"})]
    assert m.status == "1 queued, 1 deferred"
    assert (m.client_ip, m.helo, m.auth_user, m.listener) == (
        "192.0.2.7", "client.test", "alice", "submission")
    assert (m.tls_version, m.tls_cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert m.created_at == T0
    assert m.headers == ("Received: from client.test by mx.test\r\n"
                         "Subject: hello\r\nFrom: sender@example.org")
    assert "the body" not in m.headers


def test_show_tolerates_8bit_headers_and_bad_json(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    add_message("Q1", mail_params="not json", body=b"Subject: caf\xc3\xa9 \xff\n\nbody\n")
    m = QueueReader(engine).show("Q1")
    assert m is not None
    assert m.mail_params == {}
    assert m.headers.endswith("Subject: café \ufffd")
