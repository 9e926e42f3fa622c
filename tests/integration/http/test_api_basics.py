"""The API's front door: keys, SendGrid's error shape, the body limit, the OpenAPI document."""

from __future__ import annotations

import json

import pytest

from tests.integration.http.conftest import APINode
from tests.integration.http.sqlite import sqlite_only

BAD_KEY = {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                       "field": None, "help": None}]}
MAIL = {"personalizations": [{"to": [{"email": "bob@example.net"}]}], "from": {"email": "alice@example.com"},
        "subject": "Hi", "content": [{"type": "text/plain", "value": "Hello"}]}

__all__ = ["sqlite_only"]  # the layer is tested on SQLite; services run on both databases


@pytest.mark.parametrize("header", ["Bearer SG.nope.nope", "Bearer MR.AAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBB",
                                    "Basic YWxpY2U6cGFzcw==", "Bearer", "Bearer  x"])
def test_a_bad_key_gets_sendgrids_exact_401(api: APINode, header: str) -> None:
    with api.client() as http:
        r = http.post("/v3/mail/send", json=MAIL, headers={"Authorization": header})
    assert (r.status_code, r.json()) == (401, BAD_KEY)


def test_a_revoked_key_gets_401_and_nothing_is_queued(api: APINode) -> None:
    key = api.key()
    api.node.app.accounts.revoke_key(key)
    with api.client(key) as http:
        r = http.post("/v3/mail/send", json=MAIL)
    assert (r.status_code, r.json()) == (401, BAD_KEY)
    assert api.node.stored() == []


def test_no_authorization_header_is_401_in_sendgrids_shape(api: APINode) -> None:
    with api.client() as http:
        r = http.post("/v3/mail/send", json=MAIL)
    assert r.status_code == 401
    assert r.json() == {"errors": [{"message": "authorization required", "field": None, "help": None}]}


def test_repeated_bad_keys_from_one_address_are_locked_out(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[auth]\nslowdown_after = 3\nlockout_after = 3\nlockout_seconds = 60\n")
    with api.client("SG.wrong.wrong") as http:
        codes = [http.post("/v3/mail/send", json=MAIL).status_code for _ in range(4)]
        good = api.key()
        locked = http.post("/v3/mail/send", json=MAIL, headers={"Authorization": f"Bearer {good}"})
    assert codes == [401, 401, 401, 429]
    assert locked.status_code == 429 and "Retry-After" in locked.headers  # even a good key, while locked


def test_unknown_routes_and_methods_answer_in_sendgrids_shape(api: APINode) -> None:
    with api.client(api.key()) as http:
        missing = http.get("/v3/no/such/thing")
        wrong = http.get("/v3/mail/send")
    assert (missing.status_code, missing.json()["errors"][0]["message"]) == (404, "not found")
    assert (wrong.status_code, wrong.json()["errors"][0]["message"]) == (405, "method not allowed")


def test_a_body_over_the_limit_is_refused_before_it_is_read(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[http]\nmax_body = 2048\n")
    with api.client(api.key()) as http:
        declared = http.post("/v3/mail/send", content=b"{" + b" " * 4000 + b"}",
                             headers={"Content-Type": "application/json"})

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b" " * 1000

        streamed = http.post("/v3/mail/send", content=chunks(), headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "2048" in declared.json()["errors"][0]["message"]
    assert streamed.status_code == 413
    assert api.node.stored() == []


def test_json_that_is_not_an_object_or_nests_too_deep_is_a_400(api: APINode) -> None:
    with api.client(api.key()) as http:
        broken = http.post("/v3/mail/send", content=b"{not json", headers={"Content-Type": "application/json"})
        deep = http.post("/v3/mail/send", content=b"[" * 5000 + b"]" * 5000,
                         headers={"Content-Type": "application/json"})
        # 33 levels: json.loads takes it, the depth check (32) does not
        over = http.post("/v3/mail/send", content=b'{"personalizations": ' + b"[" * 32 + b"]" * 32 + b"}",
                         headers={"Content-Type": "application/json"})
        # 32 levels: parsed, then refused by the document's own rules
        at_limit = http.post("/v3/mail/send", content=b'{"personalizations": ' + b"[" * 31 + b"]" * 31 + b"}",
                             headers={"Content-Type": "application/json"})
    assert at_limit.status_code == 400 and at_limit.json()["errors"][0]["message"] != "Bad Request"
    for r in (broken, deep, over):
        assert r.status_code == 400
        assert r.json()["errors"][0]["message"] == "Bad Request"


def test_the_openapi_document_lists_mail_send(api: APINode) -> None:
    with api.client() as http:
        r = http.get("/v3/openapi.json")
    doc = json.loads(r.text)
    assert r.status_code == 200 and doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/v3/mail/send"]


def test_a_lone_surrogate_escape_is_a_400_and_real_utf8_is_sent(api: APINode) -> None:
    from mailrelay.submission import v3errors as E

    base = (b'{"personalizations": [{"to": [{"email": "bob@dest.test"}]}], "from": {"email": "alice@sender.test"},'
            b' "content": [{"type": "text/plain", "value": "hi"}], "subject": "%s"}')
    json_type = {"Content-Type": "application/json"}
    with api.client(api.key()) as http:
        lone = http.post("/v3/mail/send", content=base % b"x\\ud800", headers=json_type)
        pair = http.post("/v3/mail/send", content=base % b"\\ud83d\\ude00", headers=json_type)
        raw = http.post("/v3/mail/send", content=base % "grüße ✓".encode(), headers=json_type)
    assert lone.status_code == 400 and lone.json()["errors"][0]["message"] == E.BAD_UTF8
    assert pair.status_code == 202 and raw.status_code == 202
