"""The activity page's category and date filters, its cursor paging, the message actions (retry,
bounce, delete) over real HTTP, and the query plans that keep every page on an index."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import httpx
import sqlalchemy as sa

from mailrelay.core.status import EV_RETRIED_BY_OPERATOR
from mailrelay.events.activity import Cursor, Search, query_plan
from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from mailrelay.store.schema import messages, recipients
from tests.integration.http.conftest import APINode
from tests.integration.web.support import browser, form_token, send, sign_in


def queue_ids(page: str) -> list[str]:
    return re.findall(r'href="/messages/([0-9A-Z]{16})"', page)


def mail(api: APINode, tos: list[str], subject: str, **extra: object) -> None:
    with api.client(api.key("alice")) as http:
        r = http.post("/v3/mail/send", json={
            "personalizations": [{"to": [{"email": to}]} for to in tos],
            "from": {"email": "alice@sender.test"}, "subject": subject,
            "content": [{"type": "text/plain", "value": "hi"}], **extra})
        assert r.status_code == 202, r.text


def test_activity_filters_by_category_and_by_the_days_it_was_sent(api: APINode) -> None:
    mail(api, ["news@dest.test"], "with a category", categories=["news", "weekly"])
    mail(api, ["plain@dest.test"], "without")
    today = dt.datetime.now(dt.UTC).date()
    day = dt.timedelta(days=1)
    with browser(api) as http:
        sign_in(http)

        def count(**params: str) -> int:
            return len(queue_ids(http.get("/activity", params=params).text))

        assert count() == 2
        assert count(category="news") == 1 and count(category="weekly") == 1
        assert count(category="News") == 0 and count(category="other") == 0  # exact, as SendGrid's
        assert count(category="news", to="plain@dest.test") == 0
        assert count(from_date=str(today), to_date=str(today)) == 2
        assert count(from_date=str(today + day)) == 0 and count(to_date=str(today - day)) == 0
        assert count(to_date=str(today), category="weekly") == 1
        page = http.get("/activity", params={"from_date": "2026-13-45", "category": "news"}).text
        assert len(queue_ids(page)) == 1 and 'name="from_date" type="date" value=""' in page  # malformed: left out
        assert 'value="news"' in page and 'data-rows="/activity/rows?category=news"' in page


def rows_and_links(http: httpx.Client, url: str) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """(queue id, recipient) of each row, the older page's link, the newer page's link."""
    page = http.get(url).text
    found = [(q, to) for to, q in re.findall(r"<td>(page-\d+@dest\.test)</td>.*?/messages/([0-9A-Z]{16})", page,
                                              re.DOTALL)]
    older = re.search(r'rel="next" href="([^"]+)"', page)
    newer = re.search(r'rel="prev" href="([^"]+)"', page)
    return found, html.unescape(older.group(1)) if older else None, html.unescape(newer.group(1)) if newer else None


def test_pages_go_older_and_newer_by_cursor_with_no_row_missed_or_repeated(api: APINode) -> None:
    sent = [f"page-{i:03d}@dest.test" for i in range(120)]
    mail(api, sent, "paged")
    with browser(api) as http:
        sign_in(http)
        for start in ("/activity", "/activity?subject=paged&status=processing", "/activity?status=processing"):
            seen: list[list[tuple[str, str]]] = []
            url: str | None = start
            for _ in range(5):  # bounded: 3 pages expected
                assert url is not None
                rows, url, newer = rows_and_links(http, url)
                seen.append(rows)
                assert (newer is None) == (len(seen) == 1)
                if url is None:
                    break
            assert [len(p) for p in seen] == [50, 50, 20], start
            everything = [r for p in seen for r in p]
            assert sorted(to for _, to in everything) == sorted(sent)  # none missing, none twice
            assert everything == sorted(everything, reverse=True)  # newest (greatest queue id) first
            assert newer is not None and "older=" not in newer and "newer=" in newer
            if "?" in start:
                assert start.split("?", 1)[1] in newer  # the filters go along
            back, older, _ = rows_and_links(http, newer)  # from the last page, one newer: the middle one
            assert back == seen[1] and older is not None
        live = http.get(f"/activity?older={Cursor('Z' * 16, 2**31 - 1)}").text
        assert "data-live" not in live and len(re.findall(r"<td>page-", live)) == 50  # a later page is not live
        assert "data-live" in http.get("/activity").text
        for junk in ("older=junk&newer=1.2", f"older={'Z' * 16}.{2**31}", f"newer={'Z' * 16}.-1"):
            assert len(re.findall(r"<td>page-", http.get(f"/activity?{junk}").text)) == 50, junk  # ignored


def message_of(http: httpx.Client, to: str) -> str:
    [qid] = queue_ids(http.get("/activity", params={"to": to}).text)
    return qid


def state(api: APINode, qid: str) -> list[tuple[str, float | None]]:
    with api.node.app.engine.connect() as conn:
        return [(r.status, r.next_attempt_at) for r in conn.execute(
            sa.select(recipients.c.status, recipients.c.next_attempt_at).where(recipients.c.message_id == qid))]


def test_message_actions_retry_bounce_and_delete_with_token_and_confirmation(api: APINode) -> None:
    mail(api, ["one@dest.test"], "to retry and bounce")
    mail(api, ["two@dest.test"], "to delete")
    send(api, "bob", "bob's")
    with browser(api) as http:
        sign_in(http, "bob")
        [bobs] = queue_ids(http.get("/activity").text)
    with browser(api) as http:
        sign_in(http)
        first, second = message_of(http, "one@dest.test"), message_of(http, "two@dest.test")
        page = http.get(f"/messages/{first}")
        token = form_token(page)
        for action in ("retry", "bounce", "delete"):
            assert f'action="/messages/{first}/{action}"' in page.text
        assert 'type="checkbox" value="yes" required' in page.text

        # another account's message, an unknown one, an unknown action: 404, nothing done
        for target in (f"{bobs}/retry", f"{bobs}/bounce", f"{bobs}/delete", "0000000000000000/delete",
                       f"{first}/explode"):
            r = http.post(f"/messages/{target}", data={"csrf": token, "confirm": "yes"})
            assert r.status_code == 404 and "bob" not in r.text.replace("bob's", ""), target
        assert [s for s, _ in state(api, bobs)] == ["queued"]
        # no token: 403; no confirmation: back with a notice, nothing done
        assert http.post(f"/messages/{first}/delete", data={"confirm": "yes"}).status_code == 403
        assert http.post(f"/messages/{first}/delete", data={"csrf": "forged", "confirm": "yes"}).status_code == 403
        r = http.post(f"/messages/{first}/bounce", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == f"/messages/{first}?notice=unconfirmed"
        assert "tick the box" in http.get(r.headers["location"]).text
        before = state(api, first)
        assert [s for s, _ in before] == ["queued"]

        r = http.post(f"/messages/{first}/retry", data={"csrf": token, "confirm": "yes"})
        assert r.status_code == 303 and r.headers["location"] == f"/messages/{first}?notice=retried"
        after = http.get(r.headers["location"]).text
        assert "are due now" in after and EV_RETRIED_BY_OPERATOR in after
        [(status, due)] = state(api, first)
        assert status == "queued" and due is not None and due >= (before[0][1] or 0)

        r = http.post(f"/messages/{first}/bounce", data={"csrf": token, "confirm": "yes"})
        assert r.headers["location"] == f"/messages/{first}?notice=bounced"
        assert [s for s, _ in state(api, first)] == ["bounced"]
        bounced = http.get(r.headers["location"]).text
        assert "bounced-by-operator" in bounced and 'action="/messages/' not in bounced  # nothing left to act on
        assert len(queue_ids(http.get("/activity", params={"to": "alice@sender.test"}).text)) == 1  # the DSN
        r = http.post(f"/messages/{first}/retry", data={"csrf": token, "confirm": "yes"})
        assert r.headers["location"] == f"/messages/{first}?notice=nothing-pending"

        r = http.post(f"/messages/{second}/delete", data={"csrf": token, "confirm": "yes"})
        assert r.status_code == 303 and r.headers["location"] == "/activity?notice=deleted"
        assert "deleted from the queue" in http.get(r.headers["location"]).text
        assert http.get(f"/messages/{second}").status_code == 404
    with api.node.app.engine.connect() as conn:
        assert conn.execute(sa.select(messages.c.id).where(messages.c.id == second)).first() is None
        assert conn.execute(sa.select(recipients.c.id).where(recipients.c.message_id == second)).first() is None
        assert conn.execute(sa.select(messages.c.id).where(messages.c.id == bobs)).first() is not None


def test_the_activity_queries_read_an_index_in_order(tmp_path: Path) -> None:
    # SQLite's plan for the newest page, a deeper page and three filters: each reads its own
    # index in the page's order. A sort of the account's rows (USE TEMP B-TREE FOR ORDER BY) or
    # a scan would be slow at a million messages (bench/activity_page.py): a lost index fails here.
    engine = create_engine(f"sqlite:///{tmp_path}/plan.db")
    try:
        migrate.upgrade(engine)
        deep = Cursor("1" * 16, 42)
        cases = {
            "ix_recipients_activity ": (Search(), {}),
            "ix_recipients_activity (": (Search(sent_from=1e9, sent_before=2e9), {"older_than": deep}),
            "ix_messages_activity_from ": (Search(equals={"from_email": "a@b.test"}), {}),
            "ix_recipients_activity_to ": (Search(equals={"to_email": "a@b.test"}), {}),
            "ix_messages_activity_subject ": (Search(equals={"subject": "Hello"}), {"older_than": deep}),
            "sqlite_autoindex_message_categories_1 ": (Search(equals={"category": "news"}), {}),
            "ix_recipients_activity_status ": (Search(equals={"status": "delivered"}), {}),
        }
        for index, (search, kw) in cases.items():
            plan = query_plan(engine, 1, search, **kw)
            assert "USING INDEX " + index in plan[0] or "USING COVERING INDEX " + index in plan[0], plan
            assert not any("SCAN" in line or "TEMP B-TREE FOR ORDER BY" in line for line in plan), plan
    finally:
        engine.dispose()
