"""Scheduled sends: batch ids, mail sent into a batch, and pausing, resuming and cancelling it,
over real HTTP, both databases and (for the effect) a real delivery agent and loopback MX."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sendgrid import SendGridAPIClient

from mailrelay.spool.batches import HOLD
from mailrelay.spool.leases import claim_due
from mailrelay.store.schema import events, messages, recipients
from tests.integration.delivery.conftest import RemoteMX, delivery_toml, mx_port, remote_mx  # noqa: F401
from tests.integration.http.conftest import APINode
from tests.support.dnsserver import FakeDNS


def mail(batch_id: str | None = None, to: str = "ann@dest.test", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"personalizations": [{"to": [{"email": to}]}], "from": {"email": "shop@example.com"},
                           "subject": "Hi", "content": [{"type": "text/plain", "value": "Hello"}], **extra}
    if batch_id is not None:
        doc["batch_id"] = batch_id
    return doc


def rows(api: APINode, batch_id: str) -> list[Any]:
    with api.node.app.engine.connect() as conn:
        return list(conn.execute(sa.select(recipients.c.status, recipients.c.next_attempt_at, recipients.c.message_id)
                                 .join(messages).where(messages.c.batch_id == batch_id)).all())


def test_batch_ids_belong_to_their_account(api: APINode) -> None:
    key = api.key("alice")
    created = SendGridAPIClient(api_key=key, host=api.url).client.mail.batch.post()
    assert created.status_code == 201
    batch_id = json.loads(created.body)["batch_id"]
    with api.client(key) as alice, api.client(api.key("bob")) as bob:
        assert alice.get(f"/v3/mail/batch/{batch_id}").json() == {"batch_id": batch_id}
        assert alice.get("/v3/mail/batch/nosuchbatch").status_code == 404
        assert bob.get(f"/v3/mail/batch/{batch_id}").status_code == 404
        refused = bob.post("/v3/mail/send", json=mail(batch_id))
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "batch_id"
        bad = bob.post("/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "batch_id"
        assert alice.post("/v3/mail/send", json=mail(batch_id)).status_code == 202
        assert alice.post("/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"}).status_code == 201
        assert bob.get(f"/v3/user/scheduled_sends/{batch_id}").status_code == 404
        assert bob.patch(f"/v3/user/scheduled_sends/{batch_id}", json={"status": "cancel"}).status_code == 404
        assert bob.delete(f"/v3/user/scheduled_sends/{batch_id}").status_code == 404
        assert bob.get("/v3/user/scheduled_sends").json() == []
        assert alice.get("/v3/user/scheduled_sends").json() == [{"batch_id": batch_id, "status": "pause"}]
    assert [m["batch_id"] for m in api.node.stored()] == [batch_id]
    assert [r.status for r in rows(api, batch_id)] == ["queued"]  # bob changed nothing


def test_pause_holds_resume_restores_the_send_time_and_cancel_drops(api: APINode) -> None:
    send_at = int(time.time()) + 600
    with api.client(api.key()) as http:
        batch_id = http.post("/v3/mail/batch").json()["batch_id"]
        assert http.post("/v3/mail/send", json=mail(batch_id, send_at=send_at)).status_code == 202
        assert http.post("/v3/mail/send", json=mail(batch_id, to="ben@dest.test")).status_code == 202
        [(_, due1, _), (_, due2, _)] = sorted(rows(api, batch_id), key=lambda r: r.next_attempt_at)
        assert due2 == send_at
        assert http.post("/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"}).status_code == 201
        assert all(r.next_attempt_at >= HOLD and r.status == "queued" for r in rows(api, batch_id))
        again = http.post("/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"})
        assert again.status_code == 400
        with api.node.app.engine.begin() as conn:  # the delivery agent's claim finds nothing due, even later
            assert claim_due(conn, node="t", now=time.time() + 7200, limit=100, lease_seconds=60,
                             next_attempt=lambda n: 60.0) == []
        # sent into the paused batch: held in the same transaction that queues it
        assert http.post("/v3/mail/send", json=mail(batch_id, to="cat@dest.test")).status_code == 202
        assert len(rows(api, batch_id)) == 3 and all(r.next_attempt_at >= HOLD for r in rows(api, batch_id))
        assert http.get(f"/v3/user/scheduled_sends/{batch_id}").json() == [{"batch_id": batch_id, "status": "pause"}]
        assert http.delete(f"/v3/user/scheduled_sends/{batch_id}").status_code == 204
        times = sorted(r.next_attempt_at for r in rows(api, batch_id))
        assert abs(times[0] - due1) < 0.01 and abs(times[-1] - send_at) < 0.01  # as scheduled again (to a µs)
        assert http.get(f"/v3/user/scheduled_sends/{batch_id}").status_code == 404
        assert http.post("/v3/user/scheduled_sends", json={"batch_id": batch_id, "status": "pause"}).status_code == 201
        assert http.patch(f"/v3/user/scheduled_sends/{batch_id}", json={"status": "cancel"}).status_code == 204
        assert {r.status for r in rows(api, batch_id)} == {"dropped"}
        assert http.get("/v3/user/scheduled_sends").json() == [{"batch_id": batch_id, "status": "cancel"}]
        # mail sent into a cancelled batch is dropped at once
        assert http.post("/v3/mail/send", json=mail(batch_id, to="dan@dest.test")).status_code == 202
        assert [r.status for r in rows(api, batch_id)] == ["dropped"] * 4
    with api.node.app.engine.connect() as conn:
        dropped = conn.execute(sa.select(events.c.recipient, events.c.detail).where(events.c.type == "dropped")).all()
    assert sorted(r.recipient for r in dropped) == ["ann@dest.test", "ben@dest.test", "cat@dest.test", "dan@dest.test"]
    assert {r.detail for r in dropped} == {"Cancelled batch"}


def test_a_paused_batch_waits_for_the_delivery_agent_until_resumed(api_factory: Callable[..., APINode],
                                                                   fake_dns: FakeDNS, mx_port: int,  # noqa: F811
                                                                   remote_mx: Callable[..., RemoteMX]) -> None:  # noqa: F811
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = api_factory(delivery_toml(fake_dns.address, mx_port))
    with api.client(api.key()) as http:
        paused = http.post("/v3/mail/batch").json()["batch_id"]
        cancelled = http.post("/v3/mail/batch").json()["batch_id"]
        send_at = int(time.time()) + 2
        for batch_id, to in ((paused, "ann@dest.test"), (cancelled, "ben@dest.test")):
            assert http.post("/v3/mail/send", json=mail(batch_id, to=to, send_at=send_at)).status_code == 202
        http.post("/v3/user/scheduled_sends", json={"batch_id": paused, "status": "pause"})
        http.post("/v3/user/scheduled_sends", json={"batch_id": cancelled, "status": "cancel"})
        assert http.post("/v3/mail/send", json=mail(None, to="cat@dest.test")).status_code == 202
        [first] = mx.wait_for(1)
        assert first.rcpt_tos == ["cat@dest.test"]  # mail outside the batches goes at once
        time.sleep(max(0.0, send_at + 2 - time.time()))
        assert len(mx.handler.messages) == 1, "a paused or cancelled batch was delivered"
        assert http.delete(f"/v3/user/scheduled_sends/{paused}").status_code == 204
        got = mx.wait_for(2)
    assert got[1].rcpt_tos == ["ann@dest.test"]
    time.sleep(0.5)
    assert len(mx.handler.messages) == 2  # the cancelled batch never goes
    assert [r.status for r in rows(api, cancelled)] == ["dropped"]
