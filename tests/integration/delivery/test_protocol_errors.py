"""A remote server that says our commands came out of order (503) defers the mail and is logged
loudly as our own fault; it never bounces."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mailrelay.store.schema import attempts
from tests.integration.delivery.conftest import Behaviour, RecordingHandler, RemoteMX
from tests.integration.delivery.test_delivery import start_node, submit, wait_status
from tests.support.dnsserver import FakeDNS

BAD_SEQUENCE = "503 5.5.1 Error: need MAIL command"


class FirstRcptOutOfOrder(RecordingHandler):
    """Answers the first RCPT of all with 503, as a server that lost our MAIL would."""

    said_503 = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if not self.said_503:
            self.said_503 = True
            return BAD_SEQUENCE
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def out_of_order_mx(mx_port: int) -> Iterator[RemoteMX]:
    handler = FirstRcptOutOfOrder(Behaviour())
    controller = Controller(handler, hostname="127.0.0.2", port=mx_port, ready_timeout=10,
                            server_hostname="mx-127.0.0.2.test")
    controller.start()
    mx = RemoteMX("127.0.0.2", mx_port, handler, controller)
    yield mx
    mx.stop()


def test_503_defers_then_delivers_and_is_logged_as_a_warning(
        node_factory: Any, fake_dns: FakeDNS, mx_port: int, out_of_order_mx: RemoteMX,
        remote_mx: Any, caplog: pytest.LogCaptureFixture) -> None:
    sender_mx = remote_mx("127.0.0.6")  # where a bounce to alice would go
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    fake_dns.mx("sender.test", (10, "mx.sender.test"))
    fake_dns.a("mx.sender.test", "127.0.0.6")
    node = start_node(node_factory, fake_dns, mx_port)
    with caplog.at_level(logging.WARNING, logger="mailrelay.delivery"):
        qid = submit(node, ["bob@dest.test"])
        out_of_order_mx.wait_for(1, timeout=30)
        wait_status(node, qid, {"bob@dest.test": "delivered"})
    with node.app.engine.connect() as conn:
        rows = conn.execute(sa.select(attempts.c.outcome, attempts.c.reply)
                            .where(attempts.c.message_id == qid).order_by(attempts.c.id)).all()
    assert [r.outcome for r in rows] == ["deferred", "delivered"]
    assert rows[0].reply.startswith(BAD_SEQUENCE)
    assert sender_mx.messages == [], "no bounce for our own protocol error"
    [warning] = [r for r in caplog.records if "503" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert "mx.dest.test" in text and "127.0.0.2" in text and BAD_SEQUENCE in text
