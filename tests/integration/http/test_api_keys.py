"""SendGrid's key management over HTTP: /v3/scopes and /v3/api_keys, per account, with scopes."""

from __future__ import annotations

import json

import pytest
from python_http_client.exceptions import BadRequestsError, ForbiddenError, NotFoundError, UnauthorizedError
from sendgrid import SendGridAPIClient

from mailrelay.accounts.scopes import FULL_ACCESS
from mailrelay.accounts.service import ApiKey
from mailrelay.http.keys import MAX_KEYS
from tests.integration.http.conftest import APINode
from tests.integration.http.sqlite import sqlite_only

BAD_KEY = {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                       "field": None, "help": None}]}
KEY_ADMIN = ["api_keys.create", "api_keys.read", "api_keys.update", "api_keys.delete"]

__all__ = ["sqlite_only"]  # the layer is tested on SQLite; services run on both databases


def sg(api: APINode, key: str) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=key, host=api.url)


def key_id(full: str) -> str:
    return full.split(".")[1]


def alices_key(api: APINode, key: str) -> ApiKey:
    account = api.node.app.accounts.get("alice")
    assert account is not None
    return api.node.app.accounts.get_key(account.id, key)


def fields(r) -> list[tuple[int, str | None]]:  # type: ignore[no-untyped-def]
    return [(r.status_code, e["field"]) for e in r.json()["errors"]]


# -- /v3/scopes --------------------------------------------------------------------------------

def test_scopes_lists_every_scope_for_a_full_access_key_through_sendgrids_client(api: APINode) -> None:
    response = sg(api, api.key()).client.scopes.get()
    assert response.status_code == 200
    assert json.loads(response.body) == {"scopes": sorted(FULL_ACCESS)}


def test_scopes_needs_no_scope_and_lists_only_the_keys_own(api: APINode) -> None:
    with api.client(api.key(scopes=["stats.read", "mail.send"])) as http:
        r = http.get("/v3/scopes")
    assert (r.status_code, r.json()) == (200, {"scopes": ["mail.send", "stats.read"]})


# -- create ------------------------------------------------------------------------------------

def test_create_through_sendgrids_client_gives_a_working_key_shown_only_once(api: APINode) -> None:
    admin = api.key()
    response = sg(api, admin).client.api_keys.post(request_body={"name": "Sender", "scopes": ["mail.send"]})
    assert response.status_code == 201
    made = json.loads(response.body)
    assert set(made) == {"api_key", "api_key_id", "name", "scopes"}
    assert made["api_key"].startswith("SG.") and len(made["api_key"]) == 69
    assert (key_id(made["api_key"]), made["name"], made["scopes"]) == (made["api_key_id"], "Sender", ["mail.send"])
    with api.client(made["api_key"]) as http:
        assert http.get("/v3/scopes").json() == {"scopes": ["mail.send"]}
        assert http.get("/v3/api_keys").status_code == 403  # it has no api_keys.read
    with api.client(admin) as http:
        listed = http.get("/v3/api_keys").text
        shown = http.get(f"/v3/api_keys/{made['api_key_id']}").text
    assert made["api_key"].split(".")[2] not in listed + shown
    stored = [k for k in api.node.app.accounts.list_keys("alice") if k.id == made["api_key_id"]]
    assert [(k.label, k.scopes) for k in stored] == [("Sender", ("mail.send",))]


def test_create_without_scopes_is_full_access(api: APINode) -> None:
    with api.client(api.key()) as http:
        r = http.post("/v3/api_keys", json={"name": "Everything", "ignored": True})
    assert r.status_code == 201 and r.json()["scopes"] == sorted(FULL_ACCESS)
    with api.client(r.json()["api_key"]) as http:
        assert http.get("/v3/scopes").json() == {"scopes": sorted(FULL_ACCESS)}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 7}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"name": "bad\r\nname"}, "name"),
    ({"name": "k", "scopes": "mail.send"}, "scopes"),
    ({"name": "k", "scopes": ["mail.send", "alerts.read"]}, "scopes"),
    ({"name": "k", "scopes": [1]}, "scopes.0"),
])
def test_an_invalid_create_is_400_naming_the_field_and_makes_no_key(api: APINode, body: dict, field: str) -> None:
    with api.client(api.key()) as http:
        r = http.post("/v3/api_keys", json=body)
    assert fields(r)[0] == (400, field)
    assert len(api.node.app.accounts.list_keys("alice")) == 1


def test_a_body_that_is_not_json_is_400(api: APINode) -> None:
    with api.client(api.key()) as http:
        r = http.post("/v3/api_keys", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["message"]


def test_a_key_cannot_grant_scopes_it_lacks(api: APINode) -> None:
    limited = api.key(scopes=[*KEY_ADMIN, "mail.send"])
    with api.client(limited) as http:
        more = http.post("/v3/api_keys", json={"name": "k", "scopes": ["mail.send", "stats.read"]})
        same = http.post("/v3/api_keys", json={"name": "k", "scopes": ["mail.send"]})
        default = http.post("/v3/api_keys", json={"name": "k"})
        made = same.json()["api_key_id"]
        widen = http.put(f"/v3/api_keys/{made}", json={"name": "k", "scopes": ["stats.read"]})
    assert fields(more) == [(403, "scopes")] and "stats.read" in more.json()["errors"][0]["help"]
    assert same.status_code == 201
    assert default.status_code == 201 and default.json()["scopes"] == sorted([*KEY_ADMIN, "mail.send"])
    assert fields(widen) == [(403, "scopes")]
    assert alices_key(api, made).scopes == ("mail.send",)


def test_sendgrid_nesting_lets_suppression_read_grant_one_lists_read(api: APINode) -> None:
    with api.client(api.key(scopes=["api_keys.create", "suppression.read"])) as http:
        r = http.post("/v3/api_keys", json={"name": "k", "scopes": ["suppression.bounces.read"]})
    assert r.status_code == 201


def test_create_needs_api_keys_create(api: APINode) -> None:
    with pytest.raises(ForbiddenError) as refused:
        sg(api, api.key(scopes=["api_keys.read"])).client.api_keys.post(request_body={"name": "k"})
    assert json.loads(refused.value.body)["errors"][0]["message"] == "access forbidden"


def test_an_account_has_at_most_100_active_keys(api: APINode) -> None:
    admin = api.key()
    for _ in range(MAX_KEYS - 1):
        api.key()
    spare = api.key()
    api.node.app.accounts.revoke_key(spare)  # revoked keys do not count
    with api.client(admin) as http:
        full = http.post("/v3/api_keys", json={"name": "one too many"})
        assert http.delete(f"/v3/api_keys/{key_id(api.key())}").status_code == 204  # the 101st, made directly
        assert http.post("/v3/api_keys", json={"name": "still too many"}).status_code == 403
        ids = [k["api_key_id"] for k in http.get("/v3/api_keys").json()["result"]]
        assert http.delete(f"/v3/api_keys/{ids[-1]}").status_code == 204
        room = http.post("/v3/api_keys", json={"name": "room again"})
    assert fields(full) == [(403, None)]
    assert room.status_code == 201


# -- list and get ------------------------------------------------------------------------------

def test_list_shows_the_accounts_active_keys_only(api: APINode) -> None:
    admin = api.key()
    _, _ = api.node.app.accounts.create_key("alice", "second")
    revoked = api.key(label="revoked")
    api.node.app.accounts.revoke_key(revoked)
    bobs = api.key("bob", label="bobs")
    with api.client(admin) as http:
        everything = http.get("/v3/api_keys").json()
        one = http.get("/v3/api_keys", params={"limit": 1}).json()
        bad = http.get("/v3/api_keys", params={"limit": 0})
    ids = [k["api_key_id"] for k in everything["result"]]
    assert key_id(admin) in ids and key_id(revoked) not in ids and key_id(bobs) not in ids
    assert len(ids) == 2 and all(set(k) == {"api_key_id", "name"} for k in everything["result"])
    assert len(one["result"]) == 1
    assert fields(bad) == [(400, "limit")]


def test_get_answers_sendgrids_result_list_with_the_scopes(api: APINode) -> None:
    full = api.key(label="mine", scopes=["mail.send", "api_keys.read"])
    response = sg(api, full).client.api_keys._(key_id(full)).get()
    assert json.loads(response.body) == {"result": [{"api_key_id": key_id(full), "name": "mine",
                                                     "scopes": ["api_keys.read", "mail.send"]}]}


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_another_accounts_key_is_404_and_left_alone(api: APINode, method: str) -> None:
    bobs = api.key("bob", label="bobs", scopes=["mail.send"])
    body = {"name": "stolen", "scopes": ["mail.send", "stats.read"]} if method != "GET" else None
    with api.client(api.key()) as http:
        r = http.request(method, f"/v3/api_keys/{key_id(bobs)}", json=body)
        missing = http.request(method, "/v3/api_keys/AAAAAAAAAAAAAAAAAAAAAA", json=body)
        garbage = http.request(method, "/v3/api_keys/..%20x", json=body)
    for answer in (r, missing, garbage):
        assert (answer.status_code, answer.json()["errors"][0]["message"]) == (404, "not found")
    assert "bobs" not in r.text
    kept = api.node.app.accounts.list_keys("bob")[0]
    assert (kept.label, kept.scopes, kept.active) == ("bobs", ("mail.send",), True)
    with api.client(bobs) as http:
        assert http.get("/v3/scopes").status_code == 200


def test_a_key_revoked_from_the_cli_is_404_here(api: APINode) -> None:
    revoked = api.key()
    api.node.app.accounts.revoke_key(revoked)
    with api.client(api.key()) as http:
        assert http.get(f"/v3/api_keys/{key_id(revoked)}").status_code == 404


# -- update ------------------------------------------------------------------------------------

def test_patch_renames_only(api: APINode) -> None:
    target = api.key(label="old", scopes=["mail.send"])
    response = sg(api, api.key()).client.api_keys._(key_id(target)).patch(request_body={"name": "A New Hope"})
    assert json.loads(response.body) == {"api_key_id": key_id(target), "name": "A New Hope"}
    kept = alices_key(api, key_id(target))
    assert (kept.label, kept.scopes) == ("A New Hope", ("mail.send",))


def test_put_sets_name_and_scopes_and_the_keys_next_request_sees_them(api: APINode) -> None:
    target = api.key(label="old", scopes=["api_keys.read", "mail.send"])
    with api.client(target) as http:
        assert http.get("/v3/api_keys").status_code == 200
    with api.client(api.key()) as http:
        r = http.put(f"/v3/api_keys/{key_id(target)}", json={"name": "Stats", "scopes": ["stats.read"]})
        full = http.put(f"/v3/api_keys/{key_id(target)}", json={"name": "All", "scopes": sorted(FULL_ACCESS)})
        back = http.put(f"/v3/api_keys/{key_id(target)}", json={"name": "Stats", "scopes": ["stats.read"]})
    assert r.json() == {"api_key_id": key_id(target), "name": "Stats", "scopes": ["stats.read"]}
    assert full.json()["scopes"] == sorted(FULL_ACCESS)
    assert back.status_code == 200
    with api.client(target) as http:
        assert http.get("/v3/api_keys").status_code == 403
        assert http.get("/v3/scopes").json() == {"scopes": ["stats.read"]}


@pytest.mark.parametrize(("method", "body", "field"), [
    ("PUT", {"name": "k"}, "scopes"),
    ("PUT", {"name": "k", "scopes": []}, "scopes"),
    ("PUT", {"scopes": ["mail.send"]}, "name"),
    ("PUT", {"name": "k", "scopes": ["nope"]}, "scopes"),
    ("PATCH", {}, "name"),
    ("PATCH", {"name": "x\x00y"}, "name"),
])
def test_an_invalid_update_is_400_with_the_field_and_changes_nothing(api: APINode, method: str, body: dict,
                                                                     field: str) -> None:
    target = api.key(label="same", scopes=["mail.send"])
    with api.client(api.key()) as http:
        r = http.request(method, f"/v3/api_keys/{key_id(target)}", json=body)
    assert fields(r)[0] == (400, field)
    kept = alices_key(api, key_id(target))
    assert (kept.label, kept.scopes) == ("same", ("mail.send",))


def test_update_needs_api_keys_update(api: APINode) -> None:
    target = api.key()
    with api.client(api.key(scopes=["api_keys.read", "api_keys.delete"])) as http:
        r = http.patch(f"/v3/api_keys/{key_id(target)}", json={"name": "x"})
    assert r.status_code == 403


# -- delete ------------------------------------------------------------------------------------

def test_delete_through_sendgrids_client_is_204_and_the_keys_next_request_is_401(api: APINode) -> None:
    doomed = api.key()
    response = sg(api, api.key()).client.api_keys._(key_id(doomed)).delete()
    assert response.status_code == 204
    with pytest.raises(UnauthorizedError) as refused:
        sg(api, doomed).client.scopes.get()
    assert json.loads(refused.value.body) == BAD_KEY
    assert key_id(doomed) not in [k.id for k in api.node.app.accounts.list_keys("alice")]
    with pytest.raises(NotFoundError):
        sg(api, api.key()).client.api_keys._(key_id(doomed)).delete()


def test_a_key_can_delete_itself_and_is_refused_afterwards(api: APINode) -> None:
    me = api.key()
    with api.client(me) as http:
        assert http.delete(f"/v3/api_keys/{key_id(me)}").status_code == 204
        after = http.get("/v3/api_keys")
    assert (after.status_code, after.json()) == (401, BAD_KEY)


def test_a_revoked_key_is_401_on_key_management(api: APINode) -> None:
    key = api.key()
    api.node.app.accounts.revoke_key(key)
    with pytest.raises(UnauthorizedError) as refused:
        sg(api, key).client.api_keys.post(request_body={"name": "k"})
    assert json.loads(refused.value.body) == BAD_KEY


def test_delete_needs_api_keys_delete(api: APINode) -> None:
    target = api.key()
    with api.client(api.key(scopes=["api_keys.read"])) as http:
        assert http.delete(f"/v3/api_keys/{key_id(target)}").status_code == 403
    assert alices_key(api, key_id(target)).active


def test_the_sendgrid_client_sees_400_for_a_bad_create(api: APINode) -> None:
    with pytest.raises(BadRequestsError) as refused:
        sg(api, api.key()).client.api_keys.post(request_body={"scopes": ["mail.send"]})
    assert json.loads(refused.value.body)["errors"][0]["field"] == "name"
