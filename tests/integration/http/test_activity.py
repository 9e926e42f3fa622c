"""Stats, category stats and email activity: counted from the events of mail sent through the
API and over SMTP, for the caller's account only."""

from __future__ import annotations

import datetime as dt
import json
import time
from email.message import EmailMessage
from typing import Any

from sendgrid import SendGridAPIClient

from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import recipients
from tests.integration.http.conftest import APINode

TODAY = dt.datetime.now(dt.UTC).date()
PAST = dt.datetime(2024, 3, 6, 15, 30, tzinfo=dt.UTC).timestamp()  # a Wednesday


def send_api(api: APINode, key: str, to: list[str], categories: list[str], subject: str = "Order") -> str:
    doc = {"personalizations": [{"to": [{"email": t}]} for t in to], "from": {"email": "shop@example.com"},
           "subject": subject, "content": [{"type": "text/plain", "value": "Thanks"}], "categories": categories}
    with api.client(key) as http:
        r = http.post("/v3/mail/send", json=doc)
    assert r.status_code == 202, r.text
    return r.headers["X-Message-Id"]


def send_smtp(api: APINode, to: str, categories: list[str], user: str = "alice") -> None:
    msg = EmailMessage()
    msg["From"] = f"{user}@example.com"
    msg["To"] = to
    msg["Subject"] = "Over SMTP"
    msg["X-SMTPAPI"] = json.dumps({"category": categories})
    msg.set_content("hello")
    with api.node.submission(user) as client:
        client.send_message(msg)


def queued(api: APINode) -> dict[str, dict[str, Any]]:
    """Every stored message by recipient address."""
    return {r["address"]: m for m in api.node.stored() for r in m["recipients"]}


def record(api: APINode, message: dict[str, Any], address: str, status: str, reply: str,
           at: float | None = None) -> None:
    """What the delivery agent writes for an outcome: the recipient's status and its event."""
    now = time.time() if at is None else at
    with api.node.app.engine.begin() as conn:
        conn.execute(recipients.update().where(recipients.c.message_id == message["id"],
                                               recipients.c.address == address)
                     .values(status=status, last_reply=reply, updated_at=now))
        add_events(conn, [{"account_id": message["account_id"], "message_id": message["id"], "recipient": address,
                           "type": status, "reply": reply, "detail": "", "at": now, "attempt": 1,
                           "mx_host": "mx.example.net"}])


def metrics(**counts: int) -> dict[str, int]:
    names = ("blocks", "bounce_drops", "bounces", "clicks", "deferred", "delivered", "invalid_emails", "opens",
             "processed", "requests", "spam_report_drops", "spam_reports", "unique_clicks", "unique_opens",
             "unsubscribe_drops", "unsubscribes")
    return {n: counts.get(n, 0) for n in names}


def sent_mix(api: APINode, key: str) -> dict[str, dict[str, Any]]:
    """Four recipients of alice (API and SMTP) with a delivery, a bounce, a block and a deferral."""
    send_api(api, key, ["ann@example.net", "ben@example.org"], ["orders", "receipts"])
    send_smtp(api, "cat@example.net", ["orders"])
    send_smtp(api, "dan@example.net", ["news"])
    by_address = queued(api)
    record(api, by_address["ann@example.net"], "ann@example.net", "delivered", "250 2.0.0 OK")
    record(api, by_address["ben@example.org"], "ben@example.org", "bounced", "550 5.1.1 no such user")
    record(api, by_address["cat@example.net"], "cat@example.net", "bounced", "550 5.7.1 blocked by policy")
    record(api, by_address["dan@example.net"], "dan@example.net", "deferred", "451 4.3.0 try later")
    return by_address


def test_stats_count_the_accounts_events_per_day_with_sendgrids_client(api: APINode) -> None:
    key = api.key()
    sent_mix(api, key)
    send_smtp(api, "eve@example.net", ["orders"], user="bob")  # bob's: not in alice's numbers
    sg = SendGridAPIClient(api_key=key, host=api.url)
    start = (TODAY - dt.timedelta(days=2)).isoformat()
    response = sg.client.stats.get(query_params={"start_date": start, "aggregated_by": "day"})
    assert response.status_code == 200
    days = json.loads(response.body)
    assert [d["date"] for d in days] == [(TODAY - dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    assert days[0]["stats"] == [{"metrics": metrics()}]
    assert days[2]["stats"] == [{"metrics": metrics(requests=4, processed=4, delivered=1, bounces=1, blocks=1,
                                                    deferred=1)}]
    with api.client(api.key("bob")) as http:
        bobs = http.get("/v3/stats", params={"start_date": TODAY.isoformat()}).json()
    assert bobs == [{"date": TODAY.isoformat(), "stats": [{"metrics": metrics(requests=1, processed=1)}]}]


def test_stats_by_week_and_month_start_at_the_period_start_in_utc(api: APINode) -> None:
    by_address = sent_mix(api, api.key())
    ann = by_address["ann@example.net"]
    record(api, ann, "ann@example.net", "delivered", "250 OK", at=PAST)  # Wed 2024-03-06
    record(api, ann, "ann@example.net", "delivered", "250 OK", at=PAST + 6 * 86400)  # Tue 2024-03-12
    record(api, ann, "ann@example.net", "dropped", "", at=PAST + 30 * 86400)  # 2024-04-05
    with api.client(api.key()) as http:
        def get(**params: str) -> Any:
            r = http.get("/v3/stats", params=params)
            assert r.status_code == 200, r.text
            return [(d["date"], d["stats"][0]["metrics"]["delivered"], d["stats"][0]["metrics"]["bounce_drops"])
                    for d in r.json()]

        assert get(start_date="2024-03-05", end_date="2024-03-13", aggregated_by="week") == [
            ("2024-03-05", 1, 0), ("2024-03-11", 1, 0)]
        assert get(start_date="2024-03-01", end_date="2024-04-30", aggregated_by="month") == [
            ("2024-03-01", 2, 0), ("2024-04-01", 0, 1)]
        days = get(start_date="2024-03-06", end_date="2024-03-07")
        assert days == [("2024-03-06", 1, 0), ("2024-03-07", 0, 0)]


def test_stats_refuse_bad_dates_naming_the_field(api: APINode) -> None:
    with api.client(api.key()) as http:
        missing = http.get("/v3/stats")
        bad = http.get("/v3/stats", params={"start_date": "2024-13-01"})
        backwards = http.get("/v3/stats", params={"start_date": "2024-03-02", "end_date": "2024-03-01"})
        aggregation = http.get("/v3/stats", params={"start_date": "2024-03-01", "aggregated_by": "year"})
    for r, field in ((missing, "start_date"), (bad, "start_date"), (backwards, "end_date"),
                     (aggregation, "aggregated_by")):
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["field"] == field
    restricted = api.key(scopes=("mail.send",))
    with api.client(restricted) as http:
        assert http.get("/v3/stats", params={"start_date": "2024-03-01"}).status_code == 403


def test_category_stats_count_each_category_of_api_and_smtp_mail(api: APINode) -> None:
    key = api.key()
    sent_mix(api, key)
    send_smtp(api, "eve@example.net", ["orders"], user="bob")
    with api.client(key) as http:
        r = http.get("/v3/categories/stats", params={"start_date": TODAY.isoformat(),
                                                     "categories": ["orders", "news", "none"]})
        missing = http.get("/v3/categories/stats", params={"start_date": TODAY.isoformat()})
    assert r.status_code == 200, r.text
    [day] = r.json()
    assert day["date"] == TODAY.isoformat()
    by_name = {s["name"]: s["metrics"] for s in day["stats"]}
    assert [s["type"] for s in day["stats"]] == ["category"] * 3
    # orders: ann and ben (API), cat (SMTP); bob's eve is not alice's
    assert by_name["orders"] == metrics(requests=3, processed=3, delivered=1, bounces=1, blocks=1)
    assert by_name["news"] == metrics(requests=1, processed=1, deferred=1)
    assert by_name["none"] == metrics()
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "categories"


def test_activity_search_filters_and_shows_sendgrids_msg_id(api: APINode) -> None:
    key = api.key()
    send_api(api, key, ["ann@example.net"], ["orders"], subject="First")
    time.sleep(0.01)
    xid = send_api(api, key, ["ben@example.org"], ["orders"], subject="Second")
    send_smtp(api, "cat@example.net", [])
    by_address = queued(api)
    record(api, by_address["ann@example.net"], "ann@example.net", "delivered", "250 OK")
    record(api, by_address["ben@example.org"], "ben@example.org", "bounced", "550 5.1.1 unknown")
    ben_id = f"{xid}.{by_address['ben@example.org']['id']}"
    with api.client(key) as http:
        def search(query: str, limit: int = 100) -> list[dict[str, Any]]:
            r = http.get("/v3/messages", params={"query": query, "limit": limit})
            assert r.status_code == 200, r.text
            found: list[dict[str, Any]] = r.json()["messages"]
            return found

        everything = search("")
        assert [m["to_email"] for m in everything] == ["cat@example.net", "ben@example.org", "ann@example.net"]
        ben = everything[1]
        assert ben["msg_id"] == ben_id and ben["status"] == "not_delivered" and ben["subject"] == "Second"
        assert ben["from_email"] == "shop@example.com" and ben["opens_count"] == 0
        assert ben["last_event_time"].endswith("Z")
        assert everything[0]["msg_id"] == by_address["cat@example.net"]["id"]  # no X-Message-Id: the queue id
        assert [m["to_email"] for m in search('status="delivered"')] == ["ann@example.net"]
        assert [m["to_email"] for m in search('status="processing"')] == ["cat@example.net"]
        assert [m["to_email"] for m in search('to_email="BEN@example.org"')] == ["ben@example.org"]
        assert [m["to_email"] for m in search(f'msg_id="{ben_id}"')] == ["ben@example.org"]
        assert search(f'msg_id="WRONGxid.{by_address["ben@example.org"]["id"]}"') == []
        assert [m["to_email"] for m in search('from_email="shop@example.com" AND subject="First"')] == [
            "ann@example.net"]
        hour = dt.timedelta(hours=1)
        now = dt.datetime.now(dt.UTC)
        window = (f'last_event_time BETWEEN TIMESTAMP "{(now - hour).strftime("%Y-%m-%dT%H:%M:%SZ")}" '
                  f'AND TIMESTAMP "{(now + hour).strftime("%Y-%m-%dT%H:%M:%SZ")}"')
        assert len(search(window)) == 3
        assert search(window.replace(str(now.year), str(now.year - 1))) == []
        assert [m["to_email"] for m in search("", limit=2)] == ["cat@example.net", "ben@example.org"]
        for bad in ('categories="orders"', 'status="opened"', 'to_email="a@b" OR subject="x"',
                    "to_email=unquoted", 'subject="First" AND'):
            r = http.get("/v3/messages", params={"query": bad})
            assert r.status_code == 400, bad
            assert r.json()["errors"][0]["field"] == "query"
        assert http.get("/v3/messages", params={"limit": 1001}).status_code == 400


def test_one_message_with_its_events_and_never_another_accounts(api: APINode) -> None:
    key = api.key()
    xid = send_api(api, key, ["ann@example.net"], ["orders"], subject="Yours")
    ann = queued(api)["ann@example.net"]
    record(api, ann, "ann@example.net", "deferred", "451 4.3.0 later")
    record(api, ann, "ann@example.net", "bounced", "550 5.7.1 refused")
    msg_id = f"{xid}.{ann['id']}"
    with api.client(key) as http:
        r = http.get(f"/v3/messages/{msg_id}")
        by_queue_id = http.get(f"/v3/messages/{ann['id']}")
        wrong_xid = http.get(f"/v3/messages/AAAAAAAAAAAAAAAAAAAAAA.{ann['id']}")
    assert r.status_code == 200, r.text
    message = r.json()
    assert (message["msg_id"], message["to_email"], message["status"], message["subject"]) == (
        msg_id, "ann@example.net", "not_delivered", "Yours")
    assert message["categories"] == ["orders"]
    assert [(e["event_name"], e["reason"]) for e in message["events"]] == [
        ("processed", None), ("deferred", "451 4.3.0 later"), ("bounced", "550 5.7.1 refused")]
    assert message["events"][2]["bounce_type"] == "blocked" and message["events"][2]["mx_server"] == "mx.example.net"
    assert by_queue_id.status_code == 200 and by_queue_id.json()["msg_id"] == msg_id
    assert wrong_xid.status_code == 404
    with api.client(api.key("bob")) as http:
        theirs = http.get(f"/v3/messages/{msg_id}")
        listed = http.get("/v3/messages", params={"query": f'msg_id="{msg_id}"'})
    assert theirs.status_code == 404
    assert theirs.json() == {"errors": [{"message": "not found", "field": None, "help": None}]}
    assert listed.status_code == 200 and listed.json() == {"messages": []}
    assert ann["id"] not in theirs.text
