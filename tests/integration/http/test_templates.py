"""Dynamic templates: /v3/templates and versions, and mail sent with a template_id rendered per
recipient (Handlebars), over real HTTP and both databases."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail, Personalization, To

from tests.integration.http.conftest import APINode

HTML = ("<p>Hello {{name}}, {{{banner}}}</p>{{#each items}}<li>{{this.title}}{{#if @last}}.{{/if}}</li>{{/each}}"
        "{{#equals tier \"gold\"}}<b>gold</b>{{else}}<i>basic</i>{{/equals}}"
        "{{#unless paid}}unpaid{{else}}paid{{/unless}}")
PLAIN = "Hello {{name}}: {{length items}} items"
SUBJECT = "Order {{order}} for {{{name}}}"  # SendGrid escapes subjects too: {{{x}}} does not


def make_template(http: Any, html: str = HTML, plain: str = PLAIN, subject: str = SUBJECT) -> tuple[str, str]:
    t = http.post("/v3/templates", json={"name": "orders", "generation": "dynamic"})
    assert t.status_code == 201, t.text
    tid = t.json()["id"]
    v = http.post(f"/v3/templates/{tid}/versions", json={"name": "v1", "subject": subject,
                                                         "html_content": html, "plain_content": plain})
    assert v.status_code == 201, v.text
    return tid, v.json()["id"]


def message(stored: dict[str, Any]) -> email.message.EmailMessage:
    msg = email.message_from_bytes(bytes(stored["trace_headers"]) + bytes(stored["body"]), policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_templates_and_versions_have_sendgrids_shapes_and_one_active_version(api: APINode) -> None:
    with api.client(api.key()) as http:
        created = http.post("/v3/templates", json={"name": "welcome", "generation": "dynamic"})
        assert created.status_code == 201
        body = created.json()
        assert re.fullmatch(r"d-[0-9a-f]{32}", body["id"]) and body["versions"] == []
        assert body["generation"] == "dynamic" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["updated_at"])
        tid = body["id"]
        first = http.post(f"/v3/templates/{tid}/versions", json={"name": "one", "subject": "Hi {{name}}",
                                                                  "html_content": "<p>1</p>"}).json()
        assert re.fullmatch(r"[0-9a-f-]{36}", first["id"]) and first["active"] == 1  # the first is active
        assert first["template_id"] == tid and first["plain_content"] == ""
        second = http.post(f"/v3/templates/{tid}/versions", json={"name": "two", "html_content": "<p>2</p>"}).json()
        assert second["active"] == 0
        activated = http.post(f"/v3/templates/{tid}/versions/{second['id']}/activate")
        assert activated.status_code == 200 and activated.json()["active"] == 1
        assert http.get(f"/v3/templates/{tid}/versions/{first['id']}").json()["active"] == 0
        patched = http.patch(f"/v3/templates/{tid}/versions/{first['id']}", json={"subject": "New {{x}}"})
        assert patched.status_code == 200 and patched.json()["subject"] == "New {{x}}"
        assert patched.json()["name"] == "one"
        renamed = http.patch(f"/v3/templates/{tid}", json={"name": "welcome-2"})
        assert renamed.json()["name"] == "welcome-2" and len(renamed.json()["versions"]) == 2
        listed = http.get("/v3/templates", params={"generations": "dynamic", "page_size": 10})
        assert listed.status_code == 200
        assert [t["id"] for t in listed.json()["result"]] == [tid] and listed.json()["_metadata"]["count"] == 1
        assert http.delete(f"/v3/templates/{tid}/versions/{first['id']}").status_code == 204
        assert http.get(f"/v3/templates/{tid}/versions/{first['id']}").status_code == 404
        assert http.delete(f"/v3/templates/{tid}").status_code == 204
        assert http.get(f"/v3/templates/{tid}").status_code == 404


def test_another_accounts_template_is_404_everywhere_and_400_in_mail_send(api: APINode) -> None:
    with api.client(api.key("alice")) as alice:
        tid, vid = make_template(alice)
    with api.client(api.key("bob")) as bob:
        assert bob.get(f"/v3/templates/{tid}").status_code == 404
        assert bob.patch(f"/v3/templates/{tid}", json={"name": "mine"}).status_code == 404
        assert bob.delete(f"/v3/templates/{tid}").status_code == 404
        assert bob.post(f"/v3/templates/{tid}/versions", json={"name": "x"}).status_code == 404
        assert bob.get(f"/v3/templates/{tid}/versions/{vid}").status_code == 404
        assert bob.patch(f"/v3/templates/{tid}/versions/{vid}", json={"name": "x"}).status_code == 404
        assert bob.post(f"/v3/templates/{tid}/versions/{vid}/activate").status_code == 404
        assert bob.delete(f"/v3/templates/{tid}/versions/{vid}").status_code == 404
        assert bob.get("/v3/templates", params={"generations": "dynamic", "page_size": 5}).json()["result"] == []
        sent = bob.post("/v3/mail/send", json={"personalizations": [{"to": [{"email": "x@example.net"}]}],
                                               "from": {"email": "bob@example.com"}, "template_id": tid})
    assert sent.status_code == 400
    [error] = sent.json()["errors"]
    assert error["field"] == "template_id"
    assert error["message"] == f"The Template ID must be a valid template id for your account. You provided {tid}."
    with api.client(api.key("alice")) as alice:
        assert alice.get(f"/v3/templates/{tid}").json()["name"] == "orders"  # untouched
    assert api.node.stored() == []


def test_template_scopes_are_enforced(api: APINode) -> None:
    with api.client(api.key(scopes=["mail.send"])) as http:
        assert http.get("/v3/templates", params={"generations": "dynamic", "page_size": 5}).status_code == 403
        assert http.post("/v3/templates", json={"name": "x"}).status_code == 403
    with api.client(api.key(scopes=["templates.read", "templates.create"])) as http:
        tid = http.post("/v3/templates", json={"name": "x"}).json()["id"]
        assert http.post(f"/v3/templates/{tid}/versions", json={"name": "v"}).status_code == 403


def test_a_template_send_renders_per_recipient_with_sendgrids_client(api: APINode) -> None:
    key = api.key()
    with api.client(key) as http:
        tid, _ = make_template(http)
    mail = Mail(from_email="shop@example.com")
    mail.template_id = tid
    for who, data in (("ann@example.net", {"name": "Ann <&>", "banner": "<b>sale</b>", "order": "1",
                                           "items": [{"title": "tea"}, {"title": "cup"}], "tier": "gold",
                                           "paid": True}),
                      ("ben@example.org", {"name": "Ben", "banner": "", "order": "2", "items": [],
                                           "tier": "silver", "paid": False})):
        p = Personalization()
        p.add_to(To(who))
        p.dynamic_template_data = data
        mail.add_personalization(p)
    response = SendGridAPIClient(api_key=key, host=api.url).send(mail)
    assert response.status_code == 202
    by_rcpt = {m["recipients"][0]["address"]: message(m) for m in api.node.stored()}
    ann, ben = by_rcpt["ann@example.net"], by_rcpt["ben@example.org"]
    assert ann["Subject"] == "Order 1 for Ann <&>" and ben["Subject"] == "Order 2 for Ben"
    types = [p.get_content_type() for p in ann.walk()]
    assert types.index("text/plain") < types.index("text/html")
    ann_html = ann.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert ann_html == ("<p>Hello Ann &lt;&amp;&gt;, <b>sale</b></p><li>tea</li><li>cup.</li><b>gold</b>paid")
    # escaped in plain text too, as SendGrid's Handlebars does
    assert ann.get_body(("plain",)).get_content() == "Hello Ann &lt;&amp;&gt;: 2 items"  # type: ignore[union-attr]
    ben_html = ben.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert ben_html == "<p>Hello Ben, </p><i>basic</i>unpaid"


def test_templates_that_do_not_compile_are_refused_with_their_field(api: APINode, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with api.client(api.key()) as http:
        tid = http.post("/v3/templates", json={"name": "x"}).json()["id"]
        cases = {"html_content": "{{#if a}}unclosed",
                 "plain_content": "{{x.[a'), open(" + repr(str(marker)) + ", 'w'), ('b]}}",
                 "subject": "{{name.__class__}}"}
        for field, text in cases.items():
            r = http.post(f"/v3/templates/{tid}/versions", json={"name": "bad", field: text})
            assert r.status_code == 400, (field, r.text)
            assert r.json()["errors"][0]["field"] == field
        assert http.post(f"/v3/templates/{tid}/versions", json={"name": "bad", "html_content": "{{> other}}"}
                         ).status_code == 400
    assert not marker.exists(), "a template ran code of its own"


def test_a_template_failing_to_render_is_400_on_template_id_never_500(api: APINode) -> None:
    with api.client(api.key()) as http:
        tid, _ = make_template(http, html="{{#each a}}{{#each ../a}}{{#each ../../a}}x{{/each}}{{/each}}{{/each}}",
                               plain="", subject="Hi")
        doc = {"personalizations": [{"to": [{"email": "x@example.net"}],
                                     "dynamic_template_data": {"a": list(range(100))}}],
               "from": {"email": "alice@example.com"}, "template_id": tid}
        r = http.post("/v3/mail/send", json=doc)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "template_id"
        assert "loops more than" in r.json()["errors"][0]["message"]
        tid2, _ = make_template(http, html="{{items.first}}", plain="", subject="Hi")
        doc |= {"template_id": tid2, "personalizations": [{"to": [{"email": "x@example.net"}],
                                                          "dynamic_template_data": {"items": [1, 2]}}]}
        r = http.post("/v3/mail/send", json=doc)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "template_id"
        # a subject that renders to two lines is refused, not written as a header
        tid3, _ = make_template(http, html="x", plain="", subject="Hi {{{name}}}")
        doc |= {"template_id": tid3, "personalizations": [{"to": [{"email": "x@example.net"}],
                                                           "dynamic_template_data": {"name": "a\r\nBcc: z@x"}}]}
        r = http.post("/v3/mail/send", json=doc)
        assert r.status_code == 400
    assert api.node.stored() == []


def test_text_no_database_can_store_is_400_not_500(api: APINode) -> None:
    with api.client(api.key()) as http:
        assert http.post("/v3/templates", json={"name": "a\u0000b"}).status_code == 400
        tid = http.post("/v3/templates", json={"name": "ok"}).json()["id"]
        for field in ("name", "subject", "html_content", "plain_content"):
            r = http.post(f"/v3/templates/{tid}/versions", content=b'{"name": "v", "%s": "x\\ud800"}' % field.encode(),
                          headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (field, r.text)
        assert http.get("/v3/templates/d-00%00").status_code in (400, 404)
        assert http.get(f"/v3/templates/{tid}/versions/x%00y").status_code in (400, 404)
        sent = http.post("/v3/mail/send", json={"personalizations": [{"to": [{"email": "x@example.net"}]}],
                                                "from": {"email": "alice@example.com"}, "template_id": "d-\u0000"})
        assert sent.status_code == 400 and sent.json()["errors"][0]["field"] == "template_id"
        assert http.post("/v3/user/scheduled_sends", json={"batch_id": "a\u0000", "status": "pause"}).status_code == 400
        assert http.get("/v3/mail/batch/a%00b").status_code in (400, 404)
