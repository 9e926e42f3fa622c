"""`/admin/v1`: the operator API, over real sockets and both databases, against the CLI's rules."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from mailrelay.accounts.operators import OperatorKeys, key_path
from mailrelay.accounts.passwords import make_hasher
from mailrelay.cli.main import main
from mailrelay.spool.nodes import register
from tests.integration.http.conftest import APINode

BAD_KEY = {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                       "field": None, "help": None}]}
MAIL = {"personalizations": [{"to": [{"email": "bob@example.net"}, {"email": "carol@example.org"},
                                     {"email": "dave@example.org"}]}],
        "from": {"email": "alice@example.com"}, "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}]}


def _store(api: APINode) -> OperatorKeys:
    return OperatorKeys(key_path(api.node.app.settings.data_dir), make_hasher(fast=True))


def _operator(api: APINode) -> httpx.Client:
    return api.client(_store(api).create("tests")[1])


def _error(r: httpx.Response) -> tuple[int, str, str | None]:
    [problem] = r.json()["errors"]
    return r.status_code, problem["message"], problem["field"]


def _cli_json(api: APINode, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(["-c", str(api.node.app.settings.source), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _queue(api: APINode) -> str:
    with api.client(api.key()) as http:
        assert http.post("/v3/mail/send", json=MAIL).status_code == 202
    [message] = api.node.stored()
    return str(message["id"])


def test_an_account_key_is_401_on_admin_and_an_operator_key_is_401_on_v3(api: APINode) -> None:
    with api.client(api.key()) as http:  # full access, and still no operator
        assert (http.get("/admin/v1/accounts").status_code, http.get("/admin/v1/accounts").json()) == (401, BAD_KEY)
        assert http.get("/admin/v1/queue").json() == BAD_KEY
    with _operator(api) as http:
        assert http.get("/admin/v1/accounts").status_code == 200
        sent = http.post("/v3/mail/send", json=MAIL)
        assert (sent.status_code, sent.json()) == (401, BAD_KEY)
    assert api.node.stored() == []
    store = _store(api)
    key, full = store.create()
    store.revoke(key.id)
    with api.client(full) as http:
        assert (http.get("/admin/v1/plans").status_code, http.get("/admin/v1/plans").json()) == (401, BAD_KEY)
    with api.client() as http:
        assert http.get("/admin/v1/nodes").status_code == 401
    # Over SMTP (user apikey) an operator key is no API key either.
    assert api.node.app.accounts.authenticate("apikey", full) is None


def test_accounts_create_get_list_and_the_cli_errors(api: APINode) -> None:
    with _operator(api) as http:
        made = http.post("/admin/v1/accounts", json={"name": "carol", "plan": "unlimited", "sandbox": True,
                                                      "unknown": "ignored"})
        assert made.status_code == 201, made.text
        doc = made.json()
        password = doc.pop("password")
        assert doc == {"name": "carol", "plan": "unlimited", "status": "active", "sandbox": True, "keys": 0,
                       "created_at": doc["created_at"]}
        assert api.node.app.accounts.authenticate("carol", password) is not None
        assert "password" not in http.post("/admin/v1/accounts", json={"name": "dan", "password": "x" * 12}).json()
        assert api.node.app.accounts.get("dan").plan == "free"  # type: ignore[union-attr]  # default_plan
        assert [a["name"] for a in http.get("/admin/v1/accounts").json()] == ["alice", "bob", "carol", "dan"]
        api.key("carol")
        assert http.get("/admin/v1/accounts/carol").json()["keys"] == 1
        assert _error(http.post("/admin/v1/accounts", json={"name": "carol"})) == (
            409, "account 'carol' already exists", "name")
        bad_name = _error(http.post("/admin/v1/accounts", json={"name": "no spaces"}))
        assert bad_name[0] == 400 and bad_name[1].startswith("invalid account name 'no spaces'")
        assert bad_name[2] == "name"
        plan = _error(http.post("/admin/v1/accounts", json={"name": "erin", "plan": "gold"}))
        assert plan == (400, "unknown plan 'gold': expected one of free, unlimited (plans are defined in the "
                             "config, [plans.NAME])", "plan")
        short = _error(http.post("/admin/v1/accounts", json={"name": "erin", "password": "short"}))
        assert short == (400, "password too short: use at least 8 characters", "password")
        assert http.post("/admin/v1/accounts", json={"plan": "free"}).status_code == 400  # no name
        assert _error(http.get("/admin/v1/accounts/nobody")) == (404, "no account named 'nobody'", None)
        # A name no account can have (PostgreSQL refuses NUL in text) is 404 too, not a database error.
        for path in ("/admin/v1/accounts/a%00b", "/admin/v1/accounts/a%00b/usage"):
            assert _error(http.get(path)) == (404, "no account named 'a\\x00b'", None)
        assert http.patch("/admin/v1/accounts/a%00b", json={"status": "active"}).status_code == 404
    assert api.node.app.accounts.get("erin") is None


def test_patch_disables_moves_plan_and_sandbox_all_checked_first(api: APINode) -> None:
    key = api.key("bob")
    with _operator(api) as http:
        bad = http.patch("/admin/v1/accounts/bob", json={"plan": "unlimited", "status": "frozen"})
        assert _error(bad) == (400, "unknown status 'frozen': expected one of active, disabled", "status")
        assert http.patch("/admin/v1/accounts/bob", json={"status": "active", "plan": "gold"}).status_code == 400
        assert api.node.app.accounts.get("bob").plan == "free"  # type: ignore[union-attr]  # nothing changed
        done = http.patch("/admin/v1/accounts/bob", json={"status": "disabled", "plan": "unlimited", "sandbox": True})
        assert done.status_code == 200, done.text
        assert {k: done.json()[k] for k in ("status", "plan", "sandbox")} == {
            "status": "disabled", "plan": "unlimited", "sandbox": True}
        assert _error(http.patch("/admin/v1/accounts/nobody", json={"status": "active"}))[:2] == (
            404, "no account named 'nobody'")
    with api.client(key) as mail:  # a disabled account's keys stop working at once
        assert mail.post("/v3/mail/send", json=MAIL).status_code == 401
    with _operator(api) as http:
        assert http.patch("/admin/v1/accounts/bob", json={"status": "active"}).json()["status"] == "active"
    with api.client(key) as mail:
        assert mail.post("/v3/mail/send", json=MAIL).status_code == 202


def test_usage_plans_and_nodes_say_what_the_cli_says(api: APINode, capsys: pytest.CaptureFixture[str]) -> None:
    _queue(api)
    with api.node.app.engine.begin() as conn:
        register(conn, name="mx1.1.abc", host="mx1", now=time.time())
    with _operator(api) as http:
        usage = http.get("/admin/v1/accounts/alice/usage").json()
        assert usage["today"]["sent"] == 3 and usage["today"]["limit"] == 200
        assert usage == _cli_json(api, capsys, "account", "usage", "alice")
        assert _error(http.get("/admin/v1/accounts/nobody/usage"))[:2] == (404, "no account named 'nobody'")
        plans = {p["name"]: p for p in http.get("/admin/v1/plans").json()}
        assert plans["free"]["daily_limit"] == 200 and plans["free"]["default"] is True
        assert plans["unlimited"]["default"] is False
        nodes = http.get("/admin/v1/nodes").json()
    assert [(n["name"], n["host"], n["state"], n["leased"]) for n in nodes] == [("mx1.1.abc", "mx1", "alive", 0)]
    assert nodes == _cli_json(api, capsys, "node", "list")


def test_queue_list_show_and_summary(api: APINode, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = _queue(api)
    with _operator(api) as http:
        listed = http.get("/admin/v1/queue", params={"state": "queued"}).json()
        assert listed["total"] == 1 and [m["id"] for m in listed["messages"]] == [queue_id]
        assert listed["messages"] == _cli_json(api, capsys, "queue", "list", "--status", "queued")
        assert http.get("/admin/v1/queue", params={"state": "deferred"}).json() == {"messages": [], "total": 0}
        assert _error(http.get("/admin/v1/queue", params={"state": "lost"})) == (
            400, "invalid choice: 'lost' (choose from queued, deferred, delivered, bounced, expired, dropped, "
                 "captured)", "state")
        assert _error(http.get("/admin/v1/queue", params={"limit": 0})) == (400, "expected at least 1, got 0", "limit")
        assert http.get("/admin/v1/queue", params={"limit": 2**31}).status_code == 400
        summary = http.get("/admin/v1/queue/summary").json()
        assert [(d["domain"], d["queued"], d["deferred"]) for d in summary] == [("example.org", 2, 0),
                                                                                ("example.net", 1, 0)]
        assert summary == _cli_json(api, capsys, "queue", "summary")
        assert http.get("/admin/v1/queue/summary", params={"limit": 1}).json() == summary[:1]
        shown = http.get(f"/admin/v1/queue/{queue_id}").json()
        assert shown["id"] == queue_id and shown["account"] == "alice" and shown["attempts"] == []
        assert [r["waiting"] for r in shown["recipients"]] == ["due now; 0 attempts"] * 3
        assert any(e["type"] == "processed" for e in shown["events"])
        cli = _cli_json(api, capsys, "queue", "show", queue_id)
        for r in shown["recipients"]:
            del r["waiting"]
        assert shown == cli  # the same reader, plus why each pending recipient waits
        assert _error(http.get("/admin/v1/queue/NOSUCHID")) == (404, "no message with queue id 'NOSUCHID'", None)
        assert http.get("/admin/v1/queue/A%00B").status_code == 404
        for method, path in (("POST", "/A%00B/retry"), ("POST", "/A%00B/bounce"), ("DELETE", "/A%00B")):
            gone = http.request(method, f"/admin/v1/queue{path}")
            assert _error(gone) == (404, "no message A\x00B in the queue", None)


def test_queue_retry_bounce_delete(api: APINode) -> None:
    queue_id = _queue(api)
    with _operator(api) as http:
        assert http.post(f"/admin/v1/queue/{queue_id}/retry").json() == {"id": queue_id, "recipients": 3}
        bounced = http.post(f"/admin/v1/queue/{queue_id}/bounce").json()
        assert bounced["id"] == queue_id and bounced["recipients"] == 3 and bounced["in_delivery"] == 0
        assert bounced["dsn"] is not None
        statuses = [r["status"] for r in http.get(f"/admin/v1/queue/{queue_id}").json()["recipients"]]
        assert statuses == ["bounced"] * 3
        dsn = http.get(f"/admin/v1/queue/{bounced['dsn']}").json()
        assert [r["address"] for r in dsn["recipients"]] == ["alice@example.com"]
        assert http.post(f"/admin/v1/queue/{queue_id}/retry").json()["recipients"] == 0
        assert http.delete(f"/admin/v1/queue/{queue_id}").json() == {"id": queue_id, "recipients": 3}
        assert http.get(f"/admin/v1/queue/{queue_id}").status_code == 404
        for method, path in (("POST", f"/{queue_id}/retry"), ("POST", f"/{queue_id}/bounce"),
                             ("DELETE", f"/{queue_id}")):
            gone = http.request(method, f"/admin/v1/queue{path}")
            assert _error(gone) == (404, f"no message {queue_id} in the queue", None)
    assert [m["id"] for m in api.node.stored()] == [bounced["dsn"]]


def test_no_generated_request_to_admin_breaks_it_or_its_document(api: APINode, db_url: str) -> None:
    """Schemathesis over the /admin operations with an operator key: no 5xx, only documented
    statuses, answers in the documented shape (a bounded run)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("one database is enough for the fuzzer; the handlers are the same")
    _queue(api)
    headers = {"Authorization": f"Bearer {_store(api).create()[1]}"}
    schema = schemathesis.openapi.from_url(f"{api.url}/v3/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith("/admin/")]
    assert len(operations) == 13
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[
                not_a_server_error, status_code_conformance, response_schema_conformance])

        check()


def test_failed_keys_on_admin_count_toward_the_smtp_lockout(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[auth]\nslowdown_after = 3\nlockout_after = 3\nlockout_seconds = 60\n")
    good = _store(api).create()[1]
    with api.client(api.key()) as http:  # an account key is a failed operator key
        codes = [http.get("/admin/v1/accounts").status_code for _ in range(4)]
        locked = http.get("/admin/v1/accounts", headers={"Authorization": f"Bearer {good}"})
    assert codes == [401, 401, 401, 429]
    assert locked.status_code == 429 and "Retry-After" in locked.headers  # even a good key, while locked
