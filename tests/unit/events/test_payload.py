"""Events as posted: SendGrid Event Webhook field names, our mapping of internal types."""

from __future__ import annotations

import json

from mailrelay.core.status import EVENT_NAMES
from mailrelay.core.status import POSTED_EVENTS as POSTED
from mailrelay.events import signing
from mailrelay.events.payload import EventRow, encode_batch, status_of, to_payload
from mailrelay.events.poster import redact
from mailrelay.events.webhook import retry_delay
from mailrelay.settings import WebhookSettings

TAGS = json.dumps({"category": ["a"], "unique_args": {"uid": "7", "email": "spoof@x.test"}})


def row(type_: str, **kw: object) -> EventRow:
    base: dict[str, object] = {"id": 12, "account_id": 1, "message_id": "Q1", "recipient": "bob@dest.test",
                               "type": type_, "detail": "", "at": 1_700_000_000.7}
    return EventRow(**(base | kw))  # type: ignore[arg-type]


def test_delivered() -> None:
    p = to_payload(row("delivered", attempt=2, reply="250 2.0.0 OK", mx_host="mx.dest.test",
                       smtp_id="<m@x>", tags=TAGS))
    assert p == {"email": "bob@dest.test", "timestamp": 1_700_000_000, "event": "delivered", "sg_event_id": "mr-12",
                 "sg_message_id": "Q1", "mailrelay_message_id": "Q1", "mailrelay_event": "delivered",
                 "smtp-id": "<m@x>", "attempt": "2", "mx_host": "mx.dest.test", "response": "250 2.0.0 OK",
                 "category": ["a"], "uid": "7"}


def test_bounces_and_dropped() -> None:
    p = to_payload(row("bounced", reply="550 5.1.1 <bob@dest.test>: no such user", attempt=1))
    assert (p["event"], p["type"], p["status"]) == ("bounce", "bounce", "5.1.1")
    assert p["reason"].startswith("550 5.1.1")
    p = to_payload(row("expired", reply="4.4.7 message expired after 5 days; last error: timeout"))
    assert (p["event"], p["type"], p["status"]) == ("bounce", "expired", "4.4.7")
    p = to_payload(row("bounced-by-operator", detail="5.0.0 bounced by the operator"))
    assert (p["event"], p["status"], p["reason"]) == ("bounce", "5.0.0", "5.0.0 bounced by the operator")
    p = to_payload(row("dropped", detail="address is on the suppression list"))
    assert (p["event"], p["reason"], p["status"]) == ("dropped", "address is on the suppression list", "5.0.0")


def test_status_of() -> None:
    assert status_of("550 5.7.1 denied") == "5.7.1"
    assert status_of("554-5.7.1 multi") == "5.7.1"
    assert status_of("550 denied") == "5.0.0"
    assert status_of("451 later") == "4.0.0"
    assert status_of("our own prose") == "5.0.0"


def test_only_recipient_state_events_are_posted() -> None:
    assert {"processed", "delivered", "deferred", "bounced", "expired", "dropped", "captured"} <= POSTED
    assert not {"suppression-added", "bounce-queued", "delay-warning", "retried-by-operator"} & POSTED
    assert set(EVENT_NAMES) == POSTED  # every posted type has its webhook name


def test_batch_is_a_compact_json_array_and_bad_tags_are_ignored() -> None:
    body = encode_batch([row("processed", tags="not json"), row("deferred", id=13, reply="451 later")])
    data = json.loads(body)
    assert [e["event"] for e in data] == ["processed", "deferred"] and b", " not in body
    assert "category" not in data[0]


def test_signature_backoff_and_redaction() -> None:
    sig = signing.sign("s3cret", 1_700_000_000, b"[]")
    assert sig.startswith("v1=") and len(sig) == 67
    assert signing.verify("s3cret", "1700000000", b"[]", sig, now=1_700_000_100)
    assert not signing.verify("s3cret", "1700000000", b"[ ]", sig, now=1_700_000_100)
    assert not signing.verify("s3cret", "1700000000", b"[]", sig, now=1_700_000_400), "too old"
    s = WebhookSettings(retry_first=10, retry_max=600)
    assert [retry_delay(n, s) for n in (1, 2, 3, 7, 20)] == [10, 20, 40, 600, 600]
    assert redact("https://user:pw@hooks.example:8443/p/x?token=secret#f") == "https://hooks.example:8443/p/x"


def test_sg_message_id_starts_with_the_x_message_id_of_api_mail() -> None:
    api = json.dumps({"category": ["a"], "x_message_id": "XMid22lettersAndDigits"})
    p = to_payload(row("delivered", tags=api))
    assert p["sg_message_id"] == "XMid22lettersAndDigits.Q1" and p["mailrelay_message_id"] == "Q1"
    assert "x_message_id" not in p and p["category"] == ["a"]
    for tags in (None, TAGS, json.dumps({"x_message_id": ""}), json.dumps({"x_message_id": 5}), "not json"):
        assert to_payload(row("processed", tags=tags))["sg_message_id"] == "Q1", tags
