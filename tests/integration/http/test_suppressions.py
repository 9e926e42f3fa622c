"""SendGrid's suppression endpoints (/v3/suppression/*, /v3/asm/*) over our suppression lists and
unsubscribe groups: shapes, scopes, account isolation, SendGrid's own client, and delivery."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from python_http_client.exceptions import ForbiddenError, NotFoundError
from sendgrid import SendGridAPIClient

from mailrelay.accounts.asm import GroupService
from mailrelay.accounts.suppressions import SuppressionService
from mailrelay.core.status import EV_SUPPRESSION_ADDED, EV_SUPPRESSION_REMOVED
from mailrelay.store.schema import events, suppressions
from tests.integration.delivery.conftest import RemoteMX, delivery_toml, mx_port, remote_mx
from tests.integration.http.conftest import APINode
from tests.integration.smtp.conftest import PASSWORD
from tests.support.dnsserver import FakeDNS

__all__ = ["mx_port", "remote_mx"]  # the delivery tests' fixtures, used here

LISTS = ("bounces", "blocks", "invalid_emails", "spam_reports", "unsubscribes")


def account_id(api: APINode, name: str = "alice") -> int:
    account = api.node.app.accounts.get(name)
    assert account is not None
    return account.id


def put(api: APINode, address: str, kind: str, reason: str = "", at: float | None = None,
        account: str = "alice") -> None:
    """An entry on list `kind`, written as the delivery agent or an older mailrelay would."""
    with api.node.app.engine.begin() as conn:
        conn.execute(suppressions.insert().values(account_id=account_id(api, account), address=address,
                                                  reason=reason, kind=kind,
                                                  created_at=time.time() if at is None else at))


def test_each_list_in_sendgrids_shape_with_time_range_and_paging(api: APINode) -> None:
    put(api, "old@example.net", "bounces", "550 5.1.1 <old@example.net>: user unknown", at=1_700_000_000.5)
    put(api, "new@example.net", "bounces", "550 5.1.10 null MX", at=1_700_000_100.0)
    put(api, "blocked@example.net", "blocks", "554 5.7.1 rejected by policy", at=1_700_000_050.0)
    put(api, "nodomain@example.net", "invalid_emails", "Mail domain mentioned in email address is unknown",
        at=1_700_000_060.0)
    put(api, "spam@example.net", "spam_reports", at=1_700_000_070.0)
    put(api, "gone@example.net", "unsubscribes", at=1_700_000_080.0)
    put(api, "bobs@example.net", "bounces", "550 5.1.1", account="bob")
    with api.client(api.key()) as c:
        assert c.get("/v3/suppression/bounces").json() == [
            {"created": 1_700_000_100, "email": "new@example.net", "reason": "550 5.1.10 null MX",
             "status": "5.1.10"},
            {"created": 1_700_000_000, "email": "old@example.net",
             "reason": "550 5.1.1 <old@example.net>: user unknown", "status": "5.1.1"}]
        assert c.get("/v3/suppression/blocks").json() == [
            {"created": 1_700_000_050, "email": "blocked@example.net", "reason": "554 5.7.1 rejected by policy",
             "status": "5.7.1"}]
        assert c.get("/v3/suppression/invalid_emails").json() == [
            {"created": 1_700_000_060, "email": "nodomain@example.net",
             "reason": "Mail domain mentioned in email address is unknown"}]
        assert c.get("/v3/suppression/spam_reports").json() == [
            {"created": 1_700_000_070, "email": "spam@example.net", "ip": ""}]
        assert c.get("/v3/suppression/unsubscribes").json() == [
            {"created": 1_700_000_080, "email": "gone@example.net"}]
        # start_time and end_time are inclusive whole seconds
        window = c.get("/v3/suppression/bounces", params={"start_time": 1_700_000_000, "end_time": 1_700_000_000})
        assert [e["email"] for e in window.json()] == ["old@example.net"]
        assert [e["email"] for e in c.get("/v3/suppression/bounces",
                                          params={"start_time": 1_700_000_001}).json()] == ["new@example.net"]
        assert [e["email"] for e in c.get("/v3/suppression/bounces",
                                          params={"limit": 1, "offset": 1}).json()] == ["old@example.net"]
        assert [e["email"] for e in c.get("/v3/suppression/bounces", params={"email": "OLD@"}).json()] == [
            "old@example.net"]
        assert c.get("/v3/suppression/bounces", params={"email": "%"}).json() == []  # LIKE escaped
        bad = c.get("/v3/suppression/bounces", params={"email": "a\x00b"})  # PostgreSQL refuses NUL
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "email"
        bad = c.get("/v3/suppression/bounces/a%00b@example.net")
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "email"
        bad = c.post("/v3/asm/groups", json={"name": "a\x00b"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "name"
        bad = c.get("/v3/suppression/bounces", params={"limit": 501})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "limit"
        # one address: a list of one, or empty; looked up case-insensitively
        assert c.get("/v3/suppression/bounces/OLD@example.net").json()[0]["email"] == "old@example.net"
        assert c.get("/v3/suppression/blocks/old@example.net").json() == []
        assert c.get("/v3/suppression/bounces/bobs@example.net").json() == []  # bob's, not alice's
        bad = c.get("/v3/suppression/bounces/not-an-address")
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "email"


def test_delete_one_many_and_all_with_events(api: APINode) -> None:
    for address in ("a@example.net", "b@example.net", "c@example.net"):
        put(api, address, "bounces", "550 5.1.1 unknown")
    put(api, "kept@example.net", "blocks")
    put(api, "a@example.org", "bounces", account="bob")
    with api.client(api.key()) as c:
        assert c.delete("/v3/suppression/bounces/A@example.net").status_code == 204
        missing = c.delete("/v3/suppression/bounces/a@example.net")  # SendGrid: 404 when not on the list
        assert missing.status_code == 404 and missing.json() == {
            "errors": [{"message": "not found", "field": None, "help": None}]}
        assert c.delete("/v3/suppression/bounces/kept@example.net").status_code == 404  # on another list
        assert c.delete("/v3/suppression/bounces/a@example.org").status_code == 404  # bob's
        r = c.request("DELETE", "/v3/suppression/bounces", json={"emails": ["b@example.net", "x@example.net"]})
        assert r.status_code == 204 and r.content == b""
        assert [e["email"] for e in c.get("/v3/suppression/bounces").json()] == ["c@example.net"]
        for body in ({}, {"delete_all": False}, {"delete_all": True, "emails": ["c@example.net"]},
                     {"emails": ["not an address"]}):
            r = c.request("DELETE", "/v3/suppression/bounces", json=body)
            assert r.status_code == 400, body
        assert c.request("DELETE", "/v3/suppression/bounces", json={"delete_all": True}).status_code == 204
        assert c.get("/v3/suppression/bounces").json() == []
        assert [e["email"] for e in c.get("/v3/suppression/blocks").json()] == ["kept@example.net"]
    assert SuppressionService(api.node.app.engine).list("bob")[0].address == "a@example.org"
    with api.node.app.engine.connect() as conn:
        removed = sorted(conn.execute(sa.select(events.c.recipient).where(
            events.c.type == EV_SUPPRESSION_REMOVED, events.c.account_id == account_id(api))).scalars())
    assert removed == ["a@example.net", "b@example.net", "c@example.net"]


def test_global_unsubscribes(api: APINode) -> None:
    put(api, "bounced@example.net", "bounces", "550 5.1.1 unknown")
    with api.client(api.key()) as c:
        r = c.post("/v3/asm/suppressions/global",
                   json={"recipient_emails": ["Ann@Example.net", "bounced@example.net", "ann@example.net"]})
        assert r.status_code == 201
        assert r.json() == {"recipient_emails": ["ann@example.net", "bounced@example.net"]}
        assert c.get("/v3/asm/suppressions/global/ANN@example.net").json() == {"recipient_email": "ann@example.net"}
        assert c.get("/v3/asm/suppressions/global/zed@example.net").json() == {}
        # an unsubscribe outranks the bounce: the address moves to the unsubscribes list
        assert c.get("/v3/suppression/bounces").json() == []
        assert sorted(e["email"] for e in c.get("/v3/suppression/unsubscribes").json()) == [
            "ann@example.net", "bounced@example.net"]
        bad = c.post("/v3/asm/suppressions/global", json={"recipient_emails": ["ok@example.net", "nope"]})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "recipient_emails"
        assert c.get("/v3/asm/suppressions/global/ok@example.net").json() == {}  # all or nothing
        assert c.post("/v3/asm/suppressions/global", json={}).status_code == 400
        assert c.delete("/v3/asm/suppressions/global/ann@example.net").status_code == 204
        assert c.delete("/v3/asm/suppressions/global/ann@example.net").status_code == 204  # as SendGrid
        assert c.get("/v3/asm/suppressions/global/ann@example.net").json() == {}
    with api.client(api.key("bob")) as c:
        assert c.get("/v3/asm/suppressions/global/bounced@example.net").json() == {}
        assert c.get("/v3/suppression/unsubscribes").json() == []
    # a later hard bounce leaves an unsubscribed address where it is
    with api.node.app.engine.begin() as conn:
        assert not SuppressionService.add_from_bounce(conn, account_id(api), "bounced@example.net", "550 5.1.1", 1.0)
    with api.node.app.engine.connect() as conn:
        kind = conn.execute(sa.select(suppressions.c.kind).where(
            suppressions.c.address == "bounced@example.net")).scalar_one()
        added = conn.execute(sa.select(sa.func.count()).select_from(events).where(
            events.c.type == EV_SUPPRESSION_ADDED, events.c.recipient == "ann@example.net")).scalar_one()
    assert kind == "unsubscribes" and added == 1


def test_groups_crud_and_their_suppressions(api: APINode) -> None:
    with api.client(api.key()) as c:
        r = c.post("/v3/asm/groups", json={"name": "Newsletters", "description": "Weekly news", "is_default": True})
        assert r.status_code == 201
        news = r.json()
        assert news == {"id": news["id"], "name": "Newsletters", "description": "Weekly news", "is_default": True,
                        "unsubscribes": 0, "last_email_sent_at": None}
        offers = c.post("/v3/asm/groups", json={"name": "Offers", "is_default": True}).json()
        assert offers["description"] == "" and offers["is_default"]
        assert c.get(f"/v3/asm/groups/{news['id']}").json()["is_default"] is False  # one default
        for body, field in (({"name": "x" * 31}, "name"), ({"description": "Offers"}, "name"),
                            ({"name": "Offers"}, "name"), ({"name": "ok", "description": "d" * 101}, "description"),
                            ({"name": "a\r\nb"}, "name")):
            bad = c.post("/v3/asm/groups", json=body)
            assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, field), body
        r = c.patch(f"/v3/asm/groups/{news['id']}", json={"name": "News", "description": "Monthly"})
        assert r.status_code == 201 and (r.json()["name"], r.json()["description"]) == ("News", "Monthly")
        assert c.patch(f"/v3/asm/groups/{news['id']}", json={"name": "Offers"}).status_code == 400

        path = f"/v3/asm/groups/{news['id']}/suppressions"
        r = c.post(path, json={"recipient_emails": ["b@example.net", "A@example.net"]})
        assert r.status_code == 201 and r.json() == {"recipient_emails": ["a@example.net", "b@example.net"]}
        assert c.post(path, json={"recipient_emails": ["a@example.net"]}).status_code == 201  # already there
        assert c.get(path).json() == ["a@example.net", "b@example.net"]
        assert c.get(f"/v3/asm/groups/{news['id']}").json()["unsubscribes"] == 2
        assert c.delete(f"{path}/a@example.net").status_code == 204
        assert c.get(path).json() == ["b@example.net"]
        assert [g["name"] for g in c.get("/v3/asm/groups").json()] == ["News", "Offers"]
        assert [g["name"] for g in c.get("/v3/asm/groups", params={"id": offers["id"]}).json()] == ["Offers"]
        search = c.post(f"{path}/search", json={"recipient_emails": ["B@example.net", "z@example.net"]})
        assert search.status_code == 200 and search.json() == ["b@example.net"]
        [left] = c.get("/v3/asm/suppressions").json()
        assert (left["email"], left["group_id"], left["group_name"]) == ("b@example.net", news["id"], "News")
        assert abs(left["created_at"] - time.time()) < 60
        assert c.get("/v3/asm/suppressions/b@example.net").json() == {"suppressions": [
            {"id": news["id"], "name": "News", "description": "Monthly", "is_default": False, "suppressed": True},
            {"id": offers["id"], "name": "Offers", "description": "", "is_default": True, "suppressed": False}]}
        assert c.get("/v3/asm/suppressions/nope").status_code == 400
        # group suppressions are not global ones
        assert c.get("/v3/asm/suppressions/global/b@example.net").json() == {}

        assert c.delete(f"/v3/asm/groups/{news['id']}").status_code == 204
        for method, url in (("GET", f"/v3/asm/groups/{news['id']}"), ("GET", path),
                            ("DELETE", f"/v3/asm/groups/{news['id']}")):
            assert c.request(method, url).status_code == 404, (method, url)
        assert c.get("/v3/asm/groups/0").status_code == 400
        assert c.get("/v3/asm/groups/99999999999").status_code == 400


def test_another_accounts_group_is_404_and_untouched(api: APINode) -> None:
    groups = GroupService(api.node.app.engine)
    created = groups.create(account_id(api, "bob"), "Bob's news")
    groups.add(account_id(api, "bob"), created.id, ["reader@example.net"])
    bobs = groups.group(account_id(api, "bob"), created.id)
    assert bobs is not None and bobs.unsubscribes == 1
    with api.client(api.key("alice")) as c:
        base = f"/v3/asm/groups/{bobs.id}"
        for method, url, body in (
                ("GET", base, None), ("PATCH", base, {"name": "mine"}), ("DELETE", base, None),
                ("GET", f"{base}/suppressions", None),
                ("POST", f"{base}/suppressions", {"recipient_emails": ["x@example.net"]}),
                ("DELETE", f"{base}/suppressions/reader@example.net", None),
                ("POST", f"{base}/suppressions/search", {"recipient_emails": ["reader@example.net"]})):
            r = c.request(method, url, json=body)
            assert r.status_code == 404 and "reader" not in r.text, (method, url)
        assert c.get("/v3/asm/groups").json() == []
        assert c.get("/v3/asm/suppressions").json() == []
        assert c.get("/v3/asm/suppressions/reader@example.net").json() == {"suppressions": []}
    assert groups.group(account_id(api, "bob"), bobs.id) == bobs
    assert groups.members(account_id(api, "bob"), bobs.id) == ["reader@example.net"]


def test_scopes(api: APINode) -> None:
    put(api, "a@example.net", "bounces")
    with api.client(api.key(scopes=["suppression.bounces.read"])) as c:
        assert c.get("/v3/suppression/bounces").status_code == 200
        assert c.delete("/v3/suppression/bounces/a@example.net").status_code == 403
        assert c.get("/v3/suppression/blocks").status_code == 403
        assert c.get("/v3/asm/groups").status_code == 403
    with api.client(api.key(scopes=["suppression.delete"])) as c:  # covers every list's delete
        assert c.get("/v3/suppression/bounces").status_code == 403
        assert c.delete("/v3/suppression/bounces/a@example.net").status_code == 204
    with api.client(api.key(scopes=["asm.groups.read"])) as c:
        assert c.get("/v3/asm/groups").status_code == 200
        assert c.post("/v3/asm/groups", json={"name": "x"}).status_code == 403
        assert c.post("/v3/asm/suppressions/global", json={"recipient_emails": ["b@example.net"]}).status_code == 403
    with api.client("SG.nope.nope") as c:
        assert c.get("/v3/suppression/bounces").status_code == 401


def test_sendgrids_python_client(api: APINode) -> None:
    put(api, "old@example.net", "bounces", "550 5.1.1 unknown", at=1_700_000_000.0)
    sg = SendGridAPIClient(api_key=api.key(), host=api.url)
    r = sg.client.suppression.bounces.get(query_params={"limit": 10})
    assert r.status_code == 200
    assert json.loads(r.body) == [{"created": 1_700_000_000, "email": "old@example.net",
                                   "reason": "550 5.1.1 unknown", "status": "5.1.1"}]
    assert sg.client.suppression.bounces._("old@example.net").delete().status_code == 204
    with pytest.raises(NotFoundError):
        sg.client.suppression.bounces._("old@example.net").delete()
    r = sg.client.asm.groups.post(request_body={"name": "Receipts", "description": "Order mail"})
    assert r.status_code == 201
    group = json.loads(r.body)
    r = sg.client.asm.groups._(group["id"]).suppressions.post(request_body={"recipient_emails": ["c@example.net"]})
    assert r.status_code == 201
    assert json.loads(sg.client.asm.groups._(group["id"]).suppressions.get().body) == ["c@example.net"]
    assert json.loads(sg.client.asm.groups.get().body)[0]["unsubscribes"] == 1
    r = sg.client.asm.suppressions._("global").post(request_body={"recipient_emails": ["d@example.net"]})
    assert r.status_code == 201
    assert json.loads(sg.client.suppression.unsubscribes.get().body)[0]["email"] == "d@example.net"
    assert sg.client.suppression.bounces.delete(request_body={"delete_all": True}).status_code == 204
    narrow = SendGridAPIClient(api_key=api.key(scopes=["mail.send"]), host=api.url)
    with pytest.raises(ForbiddenError):
        narrow.client.suppression.bounces.get()


def test_an_address_suppressed_through_the_api_is_dropped_at_delivery(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int,
        remote_mx: Callable[..., RemoteMX]) -> None:
    mx = remote_mx("127.0.0.2")
    fake_dns.mx("dest.test", (10, "mx.dest.test"))
    fake_dns.a("mx.dest.test", "127.0.0.2")
    api = api_factory(delivery_toml(fake_dns.address, mx_port))
    with api.client(api.key()) as c:
        assert c.post("/v3/asm/suppressions/global",
                      json={"recipient_emails": ["Gone@dest.test"]}).status_code == 201
    client = api.node.submission("alice", PASSWORD)
    client.sendmail("alice@sender.test", ["gone@dest.test", "here@dest.test"],
                    b"From: alice@sender.test\r\nTo: here@dest.test\r\nSubject: hi\r\n\r\nhello\r\n")
    client.quit()
    [got] = mx.wait_for(1)
    assert got.rcpt_tos == ["here@dest.test"]
    deadline = time.monotonic() + 20
    dropped: list[str] = []
    while time.monotonic() < deadline and not dropped:
        with api.node.app.engine.connect() as conn:
            dropped = list(conn.execute(sa.select(events.c.recipient).where(events.c.type == "dropped")).scalars())
        time.sleep(0.05)
    assert dropped == ["gone@dest.test"]


@pytest.mark.parametrize("kind", LISTS)
def test_every_list_is_suppressed_at_delivery(api: APINode, kind: str) -> None:
    put(api, f"{kind}@example.net", kind)
    svc = SuppressionService(api.node.app.engine)
    assert svc.suppressed_among(account_id(api), [f"{kind.upper()}@example.net", "ok@example.net"]) == {
        f"{kind.upper()}@example.net"}
    assert svc.suppressed_among(account_id(api, "bob"), [f"{kind}@example.net"]) == set()
