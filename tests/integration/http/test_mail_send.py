"""POST /v3/mail/send: SendGrid's answers, and the same policy as SMTP mail."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.http.conftest import APINode
from tests.integration.http.sqlite import sqlite_only
from tests.integration.smtp.conftest import PASSWORD

__all__ = ["sqlite_only"]  # the layer is tested on SQLite; services run on both databases


def mail(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"personalizations": [{"to": [{"email": "bob@example.net"}]}],
                           "from": {"email": "alice@example.com"}, "subject": "Hi",
                           "content": [{"type": "text/plain", "value": "Hello"}]}
    doc.update(overrides)
    return doc


def test_sandbox_mode_is_validated_answered_200_and_queues_nothing(api: APINode) -> None:
    with api.client(api.key()) as http:
        ok = http.post("/v3/mail/send", json=mail(mail_settings={"sandbox_mode": {"enable": True}}))
        bad = http.post("/v3/mail/send", json=mail(mail_settings={"sandbox_mode": {"enable": True}},
                                                   **{"from": {"email": "not an address"}}))
    assert (ok.status_code, ok.content) == (200, b"")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "from.email"
    assert api.node.stored() == []


def test_every_problem_is_reported_with_sendgrids_field_path(api: APINode) -> None:
    doc = mail(personalizations=[{"to": [{"email": "ok@example.net"}, {"email": "bad"}]}],
               content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}])
    with api.client(api.key()) as http:
        r = http.post("/v3/mail/send", json=doc)
    fields = [e["field"] for e in r.json()["errors"]]
    assert r.status_code == 400
    assert "personalizations.0.to.1.email" in fields and "content" in [f or "" for f in fields]
    assert api.node.stored() == []


def test_line_breaks_in_names_subject_or_headers_never_reach_a_header(api: APINode) -> None:
    docs = [mail(subject="Hi\r\nBcc: victim@example.org"),
            mail(**{"from": {"email": "alice@example.com", "name": "A\nBcc: victim@example.org"}}),
            mail(headers={"X-Note": "a\r\nBcc: victim@example.org"})]
    with api.client(api.key()) as http:
        codes = [http.post("/v3/mail/send", json=d).status_code for d in docs]
    assert codes == [400, 400, 400]
    assert api.node.stored() == []


def test_send_at_keeps_the_message_queued_until_then(api: APINode) -> None:
    at = int(time.time()) + 3600
    with api.client(api.key()) as http:
        r = http.post("/v3/mail/send", json=mail(send_at=at))
    assert r.status_code == 202
    [stored] = api.node.stored()
    assert stored["recipients"][0]["next_attempt_at"] == at


def test_the_plans_daily_limit_answers_as_sendgrid_does_and_counts_nothing(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[plans.tiny]\ndaily_limit = 2\n")
    api.node.app.accounts.create("carol", PASSWORD, plan="tiny")
    two = mail(personalizations=[{"to": [{"email": "a@example.net"}]}, {"to": [{"email": "b@example.net"}]}])
    with api.client(api.key("carol")) as http:
        first = http.post("/v3/mail/send", json=two)
        over = http.post("/v3/mail/send", json=mail())
    assert first.status_code == 202
    assert over.status_code == 401 and over.json()["errors"][0]["message"] == "Maximum credits exceeded"
    assert len(api.node.stored()) == 2


def test_the_plans_rate_answers_429_with_rate_limit_headers(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[plans.slow]\nrate_per_minute = 2\n")
    api.node.app.accounts.create("carol", PASSWORD, plan="slow")
    with api.client(api.key("carol")) as http:
        codes = [http.post("/v3/mail/send", json=mail()).status_code for _ in range(2)]
        limited = http.post("/v3/mail/send", json=mail())
    assert codes == [202, 202]
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Limit"] == "2" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) > time.time()


def test_require_own_domain_applies_as_over_smtp(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = api_factory("[submission]\nrequire_own_domain = true\n")
    with api.client(api.key()) as http:
        r = http.post("/v3/mail/send", json=mail())
    assert r.status_code == 403
    assert r.json()["errors"][0]["message"].startswith("The from address does not match a verified Sender Identity")
    assert api.node.stored() == []
