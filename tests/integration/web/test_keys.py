"""The API keys page over real HTTP: list, create (the secret shown once), scopes, revoke."""

from __future__ import annotations

import re

import httpx

from mailrelay.accounts import scopes
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, browser, form_token, sign_in

SECRET = re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")


def create(http: httpx.Client, name: str, chosen: list[str] | None = None, **extra: str) -> httpx.Response:
    token = form_token(http.get("/keys"))
    data: dict[str, str | list[str]] = {"csrf": token, "name": name, "access": "full", **extra}
    if chosen is not None:
        data |= {"access": "restricted", "scope": chosen}
    return http.post("/keys", data=data)


def secret_of(page: httpx.Response) -> str:
    found = SECRET.findall(page.text)
    assert len(found) == 1, page.text
    return found[0]


def granted(api: APINode, key: str) -> httpx.Response:
    with api.client(key) as http:
        return http.get("/v3/scopes")


def test_a_key_made_on_the_page_works_its_secret_is_shown_once_and_its_use_is_recorded(api: APINode) -> None:
    with browser(api) as http:
        assert http.get("/keys").headers["location"] == "/login"
        sign_in(http)
        assert "No keys yet" in http.get("/keys").text
        made = create(http, f"deploy {HOSTILE}")
        assert made.status_code == 200 and "no-store" in made.headers["cache-control"]
        assert "will not be shown again" in made.text
        assert "deploy &lt;script&gt;" in made.text and "<script>alert" not in made.text
        secret = secret_of(made)
        r = granted(api, secret)
        assert r.status_code == 200 and r.json()["scopes"] == sorted(scopes.FULL_ACCESS)
        key_id = secret.split(".")[1]
        page = http.get("/keys").text
    assert secret not in page and secret.split(".")[2] not in page  # only ever in the create answer
    row = page[page.index(f"SG.{key_id}"):]
    row = row[:row.index("</tr>")]
    assert "Full access" in row and "never" not in row  # the use above is shown as last used
    [stored] = [k for k in api.node.app.accounts.list_keys("alice") if k.id == key_id]
    assert stored.label == f"deploy {HOSTILE}" and stored.scopes is None and stored.last_used_at is not None


def test_a_key_gets_exactly_the_scopes_chosen_even_nearly_all_of_them(api: APINode) -> None:
    with browser(api) as http:
        sign_in(http)
        small = secret_of(create(http, "sender", ["mail.send", "stats.read"]))
        nearly_all = sorted(scopes.FULL_ACCESS - {"api_keys.create"})  # a form larger than 4 KiB
        large = secret_of(create(http, "almost", nearly_all))
        page = http.get("/keys").text
    assert granted(api, small).json()["scopes"] == ["mail.send", "stats.read"]
    assert granted(api, large).json()["scopes"] == nearly_all
    assert "2 scopes" in page and f"{len(nearly_all)} scopes" in page


def test_refused_creations_say_why_and_make_no_key(api: APINode) -> None:
    with browser(api) as http:
        sign_in(http)
        for name, chosen, why in (("", None, "Give the key a name"), ("x" * 129, None, "too long"),
                                  ("none", [], "Choose at least one scope"),
                                  ("odd", ["mail.send", "admin.everything"], "unknown scope")):
            r = create(http, name, chosen)
            assert r.status_code == 400 and why in r.text, (name, r.text)
            assert not SECRET.search(r.text)
        r = http.post("/keys", data={"name": "forged", "access": "full"})
        assert r.status_code == 403
        r = http.post("/keys", data={"csrf": "x", "name": "many", "scope": ["mail.send"] * 500})
        assert r.status_code == 403  # more fields than any form has: refused, not a crash
    assert api.node.app.accounts.list_keys("alice") == []


def test_revoking_asks_first_needs_the_token_and_only_reaches_the_accounts_own_keys(api: APINode) -> None:
    bobs = api.key("bob")
    with browser(api) as http:
        sign_in(http)
        secret = secret_of(create(http, "short-lived"))
        key_id = secret.split(".")[1]
        assert f'href="/keys/{key_id}/revoke"' in http.get("/keys").text
        confirm = http.get(f"/keys/{key_id}/revoke")
        assert confirm.status_code == 200 and "Revoke the key “short-lived”?" in confirm.text
        assert http.post(f"/keys/{key_id}/revoke", data={"csrf": "forged"}).status_code == 403
        assert granted(api, secret).status_code == 200  # still works
        r = http.post(f"/keys/{key_id}/revoke", data={"csrf": form_token(confirm)})
        assert r.status_code == 303 and r.headers["location"] == "/keys?notice=key-revoked"
        page = http.get(r.headers["location"]).text
        assert "The key was revoked" in page and "Revoked keys" in page
        assert granted(api, secret).status_code == 401
        # a revoked key has no revoke page any more
        assert http.get(f"/keys/{key_id}/revoke").status_code == 404
        assert http.post(f"/keys/{key_id}/revoke", data={"csrf": form_token(confirm)}).status_code == 404

        # another account's key, an unknown and a malformed id: not there, and left alone
        bob_id = bobs.split(".")[1]
        token = form_token(http.get("/keys"))
        assert bob_id not in http.get("/keys").text
        for other in (bob_id, bobs, "nosuchkeyatall12345678", "not%20an%20id", "x" * 300):
            assert http.get(f"/keys/{other}/revoke").status_code == 404, other
            r = http.post(f"/keys/{other}/revoke", data={"csrf": token})
            assert r.status_code == 404 and "no such API key" in r.text, other
    assert granted(api, bobs).status_code == 200
