"""The operator pages over real HTTP: only operators reach them (the CLI grants it), accounts,
the queue by state and as qshape, bulk retry / bounce of a domain, nodes, any account's message."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailrelay.store.schema import events, messages, recipients
from tests.integration.cli.conftest import CLI, InProcess
from tests.integration.delivery.conftest import delivery_toml
from tests.integration.http.conftest import APINode
from tests.integration.smtp.conftest import PASSWORD
from tests.integration.web.support import HOSTILE, browser, form_token, send, sign_in
from tests.support.dnsserver import FakeDNS

PAGES = ["/operator", "/operator/accounts", "/operator/queue", "/operator/queue?state=deferred",
         "/operator/queue/confirm?action=retry&domain=dest.test", "/operator/nodes",
         "/operator/messages?id=0000000000000000", "/operator/messages/0000000000000000"]
POSTS = ["/operator/accounts/create", "/operator/accounts/status", "/operator/accounts/plan",
         "/operator/accounts/sandbox", "/operator/queue/retry", "/operator/queue/bounce"]


def operator(api: APINode, name: str = "alice") -> None:
    api.node.app.accounts.set_operator(name, True)


def send_to(api: APINode, account: str, *to: str) -> None:
    with api.client(api.key(account)) as http:
        r = http.post("/v3/mail/send", json={
            "personalizations": [{"to": [{"email": a} for a in to]}],
            "from": {"email": f"{account}@sender.test"}, "subject": "queued",
            "content": [{"type": "text/plain", "value": "hi"}]})
        assert r.status_code == 202, r.text


def shape_row(page: str, domain: str) -> list[int]:
    """The qshape table's counts for `domain`: total, then one per age column."""
    found = re.search(rf'<tr[^>]*><th scope="row">{re.escape(domain)}</th>(.*?)</tr>', page, re.S)
    assert found, page
    return [int(n) for n in re.findall(r"<td>(\d+)</td>", found.group(1))]


def test_no_operator_route_exists_for_an_account_that_is_not_an_operator(api: APINode) -> None:
    with browser(api) as http:
        assert all(http.get(p).headers.get("location") == "/login" for p in PAGES)  # a visitor: sign in
        assert all(http.post(p, data={}).headers.get("location") == "/login" for p in POSTS)
        sign_in(http, "bob")
        home = http.get("/activity")
        token = form_token(home)
        assert 'href="/operator"' not in home.text
        for path in PAGES:
            r = http.get(path)
            assert r.status_code == 404 and "operator" not in r.text.lower(), path
        for path in POSTS:  # with the session's token or without: the same 404, nothing done
            for data in ({"csrf": token, "name": "bob", "status": "disabled", "domain": "dest.test"}, {}):
                assert http.post(path, data=data).status_code == 404, path
        assert http.get("/activity").status_code == 200  # bob was not disabled


def test_the_cli_grants_and_revokes_the_operator_pages(api: APINode, db_url: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n')
    inproc = InProcess(config, capsys)  # the same code as the subprocess, for the cheaper checks
    with browser(api) as http:
        sign_in(http)
        assert http.get("/operator").status_code == 404
        r = CLI(config)("operator", "grant", "alice")  # the real command, in a process of its own
        assert r.code == 0 and r.out.startswith("account alice is now an operator"), r
        page = http.get("/operator")  # the session signed in before: the flag is read at every request
        assert page.status_code == 200 and 'href="/operator" aria-current="page"' in page.text
        assert 'href="/operator"' in http.get("/activity").text  # the nav's Operator link
        for path in PAGES[:6]:
            r2 = http.get(path)
            assert r2.status_code == 200 and "no-store" in r2.headers["cache-control"], path
            for form in re.findall(r'<form[^>]*method="post".*?</form>', r2.text, re.S):
                assert 'name="csrf"' in form, (path, form)
        listed = inproc("operator", "list")
        assert listed.code == 0 and re.search(r"^alice\s+active$", listed.out, re.M), listed
        assert inproc("operator", "revoke", "alice").out.strip() == "account alice is no longer an operator"
        assert http.get("/operator").status_code == 404
    missing = inproc("operator", "grant", "nobody")
    assert missing.code == 2 and missing.error_line == "mailrelay: error: no account named 'nobody'"


def test_queue_counts_by_state_and_qshape_by_domain_and_age(api: APINode) -> None:
    operator(api)
    send_to(api, "alice", "a@one.test", "b@one.test", "c@two.test")
    send_to(api, "bob", "d@one.test")
    send_to(api, "bob", "e@two.test")
    engine = api.node.app.engine
    now = time.time()
    with engine.begin() as conn:
        ids = [row.message_id for row in conn.execute(sa.select(recipients.c.message_id, recipients.c.address)
                                                      .order_by(recipients.c.address))]
        ages = {ids[0]: 2, ids[3]: 30, ids[4]: 2000}  # minutes: columns "5", "40", "1280+"
        for queue_id, minutes in ages.items():
            conn.execute(messages.update().where(messages.c.id == queue_id).values(created_at=now - minutes * 60))
        conn.execute(recipients.update().where(recipients.c.address == "e@two.test")
                     .values(status="deferred", next_attempt_at=now + 3600))
    with browser(api) as http:
        sign_in(http)
        page = http.get("/operator/queue").text
        assert re.search(r"<th scope=\"col\">queued</th>.*?</tr>\s*</thead>\s*<tbody><tr><td>4</td><td>1</td>",
                         page, re.S)  # 4 queued, 1 deferred
        # total, then 5 10 20 40 80 160 320 640 1280 1280+
        assert shape_row(page, "one.test") == [3, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        assert shape_row(page, "two.test") == [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        assert shape_row(page, "all domains") == [5, 3, 0, 0, 1, 0, 0, 0, 0, 0, 1]
        assert page.index("one.test") < page.index("two.test")  # most first
        deferred = http.get("/operator/queue", params={"state": "deferred"}).text
        assert shape_row(deferred, "two.test") == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] and "one.test" not in deferred


def _defer(api: APINode, *domains: str) -> float:
    later = time.time() + 3600
    with api.node.app.engine.begin() as conn:
        conn.execute(recipients.update().where(recipients.c.domain.in_(domains))
                     .values(status="deferred", attempts=1, next_attempt_at=later, last_reply="451 4.3.0 busy"))
    return later


def _recipients(api: APINode) -> dict[str, tuple[str, float | None]]:
    with api.node.app.engine.connect() as conn:
        return {r.address: (r.status, r.next_attempt_at) for r in conn.execute(
            sa.select(recipients.c.address, recipients.c.status, recipients.c.next_attempt_at))}


def test_bulk_retry_makes_the_domains_deferred_recipients_due_now_after_a_confirmation(api: APINode) -> None:
    operator(api)
    send_to(api, "bob", "a@slow.test", "b@slow.test", "c@other.test")
    later = _defer(api, "slow.test", "other.test")
    with browser(api) as http:
        sign_in(http)
        queue = http.get("/operator/queue", params={"state": "deferred"}).text
        assert 'href="/operator/queue/confirm?action=retry&amp;domain=slow.test"' in queue
        confirm = http.get("/operator/queue/confirm", params={"action": "retry", "domain": "slow.test"})
        assert "0 queued and 2 deferred" in confirm.text and _recipients(api)["a@slow.test"][1] == later
        assert http.post("/operator/queue/retry", data={"domain": "slow.test"}).status_code == 403  # no token
        assert _recipients(api)["a@slow.test"][1] == later
        before = time.time()
        r = http.post("/operator/queue/retry", data={"csrf": form_token(confirm), "domain": "SLOW.test"})
        assert r.status_code == 303 and r.headers["location"] == "/operator/queue?state=deferred&notice=op-retried"
        assert "due now" in http.get(r.headers["location"]).text
    found = _recipients(api)
    for address in ("a@slow.test", "b@slow.test"):
        assert found[address][0] == "deferred" and before <= (found[address][1] or later) <= time.time()
    assert found["c@other.test"] == ("deferred", later)  # another domain: untouched
    with api.node.app.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)
                            .where(events.c.type == "retried-by-operator")).scalar_one() == 1


def test_bulk_bounce_bounces_the_domains_waiting_recipients_and_tells_the_sender(api: APINode) -> None:
    operator(api)
    send_to(api, "bob", "a@dead.test", "c@other.test")
    send_to(api, "bob", "b@dead.test")
    _defer(api, "dead.test")
    with browser(api) as http:
        sign_in(http)
        confirm = http.get("/operator/queue/confirm", params={"action": "bounce", "domain": "dead.test"})
        assert "cannot be undone" in confirm.text and "Bounce: 2 recipients of dead.test" in confirm.text
        r = http.post("/operator/queue/bounce", data={"csrf": form_token(confirm), "domain": "dead.test"})
        assert r.status_code == 303 and r.headers["location"].endswith("notice=op-bounced")
        again = http.post("/operator/queue/bounce", data={"csrf": form_token(confirm), "domain": "dead.test"})
        assert again.headers["location"].endswith("notice=op-nothing")
    found = _recipients(api)
    assert found["a@dead.test"][0] == found["b@dead.test"][0] == "bounced"
    assert found["c@other.test"][0] == "queued"
    assert found["bob@sender.test"][0] == "queued"  # DSNs to the sender (both messages: one recipient each)
    with api.node.app.engine.connect() as conn:
        dsns = conn.execute(sa.select(sa.func.count()).select_from(recipients)
                            .where(recipients.c.address == "bob@sender.test")).scalar_one()
    assert dsns == 2


def test_accounts_create_disable_plan_and_sandbox(api: APINode) -> None:
    operator(api)
    send(api, "bob", "counted")
    with browser(api) as bob:
        sign_in(bob, "bob")
        with browser(api) as http:
            sign_in(http)
            page = http.get("/operator/accounts")
            token = form_token(page)
            assert re.search(r'<th scope="row">bob</th>\s*<td>active</td>\s*<td>free</td>\s*<td>off</td>\s*<td>1',
                             page.text), page.text
            created = http.post("/operator/accounts/create", data={"csrf": token, "name": "carol", "plan": "free"})
            password = re.search(r"shown this once: <code>([^<]+)</code>", created.text)
            assert created.status_code == 200 and password
            taken = http.post("/operator/accounts/create", data={"csrf": token, "name": "carol", "password": PASSWORD})
            assert taken.status_code == 400 and "already exists" in taken.text
            bad = http.post("/operator/accounts/create", data={"csrf": token, "name": HOSTILE})
            assert bad.status_code == 400 and "<script>" not in bad.text
            assert http.post("/operator/accounts/status", data={"csrf": token, "name": "bob", "status": "disabled"}
                             ).headers["location"].endswith("op-disabled")
            assert bob.get("/activity").status_code == 303  # bob's session ended with his account
            selfish = http.post("/operator/accounts/status",
                                data={"csrf": token, "name": "alice", "status": "disabled"})
            assert selfish.status_code == 400 and http.get("/operator").status_code == 200
            unknown = http.post("/operator/accounts/plan", data={"csrf": token, "name": "bob", "plan": "no-such-plan"})
            assert unknown.status_code == 400
            assert http.post("/operator/accounts/sandbox", data={"csrf": token, "name": "bob", "sandbox": "on"}
                             ).headers["location"].endswith("op-sandbox-on")
            page = http.get("/operator/accounts").text
            assert re.search(r'<th scope="row">bob</th>\s*<td>disabled</td>\s*<td>free</td>\s*<td>on</td>', page)
    bob_now = api.node.app.accounts.get("bob")
    assert bob_now is not None and bob_now.sandbox and bob_now.status == "disabled"
    with browser(api) as carol:
        assert sign_in(carol, "carol", password.group(1)).status_code == 303


def test_an_operator_sees_any_accounts_message_and_the_nodes(
        api_factory: Callable[..., APINode], fake_dns: FakeDNS, mx_port: int) -> None:
    api = api_factory(delivery_toml(fake_dns.address, mx_port))
    operator(api)
    send(api, "bob", f"bob's {HOSTILE}")
    with api.node.app.engine.connect() as conn:
        [queue_id] = conn.execute(sa.select(messages.c.id)).scalars()
    with browser(api) as http:
        sign_in(http)
        page = http.get(f"/operator/messages/{queue_id}")
        assert page.status_code == 200 and '<th scope="row">Account</th><td>bob</td>' in page.text
        assert "Subject: bob&#39;s &lt;script&gt;" in page.text and "<script>" not in page.text
        assert http.get(f"/messages/{queue_id}").status_code == 404  # alice's own pages stay hers
        assert http.get("/operator/messages", params={"id": queue_id.lower()}).headers["location"] == (
            f"/operator/messages/{queue_id}")
        assert http.get("/operator/messages/0000000000000000").status_code == 404
        deadline = time.monotonic() + 10
        while "<td>up</td>" not in (nodes := http.get("/operator/nodes").text):
            assert time.monotonic() < deadline, nodes
            time.sleep(0.2)
        assert re.search(r"<td>up</td><td>1 of 1</td>", nodes)
        assert "ago</td>" in nodes
