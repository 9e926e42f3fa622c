"""The suppressions page over real HTTP: each of the five lists, search, paging, removing an
address and adding one to the global unsubscribes; only the account's own lists."""

from __future__ import annotations

import itertools
import re

from mailrelay.accounts.asm import GroupService
from mailrelay.accounts.suppressions import SuppressionService
from tests.integration.http.conftest import APINode
from tests.integration.web.support import HOSTILE, browser, form_token, sign_in


def addresses(page: str) -> list[str]:
    return re.findall(r'<input type="hidden" name="email" value="([^"]+)">', page)


def test_each_list_is_shown_searched_and_paged_and_only_the_accounts_own(api: APINode) -> None:
    ticks = itertools.count(1_700_000_000)
    lists = SuppressionService(api.node.app.engine, clock=lambda: float(next(ticks)))
    for i in range(55):
        lists.add("alice", f"gone{i:02d}@dest.test", "550 5.1.1 no such user", kind="bounces")
    lists.add("alice", "blocked@dest.test", "554 5.7.1 refused", kind="blocks")
    lists.add("alice", "spam@dest.test", "", kind="spam_reports")
    lists.add("alice", "odd@dest.test", HOSTILE, kind="invalid_emails")
    lists.add("bob", "bobs-bounce@dest.test", "bob's reason", kind="bounces")
    with browser(api) as http:
        sign_in(http)
        first = http.get("/suppressions")
        assert first.status_code == 200
        shown = addresses(first.text)
        assert shown == [f"gone{i:02d}@dest.test" for i in range(54, 4, -1)]  # newest first, 50 a page
        assert "bobs-bounce" not in first.text and 'rel="prev"' not in first.text
        older = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert older is not None
        second = http.get(older.group(1).replace("&amp;", "&"))
        assert addresses(second.text) == [f"gone{i:02d}@dest.test" for i in range(4, -1, -1)]
        assert 'rel="next"' not in second.text and 'rel="prev"' in second.text
        found = http.get("/suppressions", params={"kind": "bounces", "q": "GONE1"}).text
        assert addresses(found) == [f"gone{i:02d}@dest.test" for i in range(19, 9, -1)]
        assert addresses(http.get("/suppressions", params={"kind": "bounces", "q": "bob"}).text) == []
        assert addresses(http.get("/suppressions?kind=blocks").text) == ["blocked@dest.test"]
        assert addresses(http.get("/suppressions?kind=spam_reports").text) == ["spam@dest.test"]
        invalid = http.get("/suppressions?kind=invalid_emails").text
        assert addresses(invalid) == ["odd@dest.test"]
        assert "<script>" not in invalid and "&lt;script&gt;alert(1)&lt;/script&gt;" in invalid
        assert addresses(http.get("/suppressions?kind=unsubscribes").text) == []
        assert http.get("/suppressions?kind=../../etc&page=-3").status_code == 200  # the first list, page 1


def test_remove_and_add_need_the_form_token_and_touch_only_the_accounts_own_lists(api: APINode) -> None:
    lists = SuppressionService(api.node.app.engine)
    lists.add("alice", "gone@dest.test", "550 5.1.1 no such user")
    lists.add("bob", "shared@dest.test", "bob's")
    with browser(api) as http:
        sign_in(http)
        page = http.get("/suppressions?kind=bounces&q=gone")
        token = form_token(page)
        assert http.post("/suppressions/remove", data={"kind": "bounces", "email": "gone@dest.test"}
                         ).status_code == 403
        assert http.post("/suppressions/add", data={"csrf": "nope", "email": "x@dest.test"}).status_code == 403
        assert lists.get("alice", "gone@dest.test") is not None
        removed = http.post("/suppressions/remove", data={
            "csrf": token, "kind": "bounces", "email": "gone@dest.test",
            "back": "/suppressions?kind=bounces&q=gone"})
        assert removed.headers["location"] == "/suppressions?kind=bounces&q=gone&notice=suppression_removed"
        assert lists.get("alice", "gone@dest.test") is None
        # bob's address is not on alice's list: nothing removed
        other = http.post("/suppressions/remove", data={"csrf": token, "kind": "bounces",
                                                        "email": "shared@dest.test", "back": "https://evil.test/"})
        assert other.headers["location"] == "/suppressions?kind=bounces&notice=suppression_absent"
        assert lists.get("bob", "shared@dest.test") is not None
        added = http.post("/suppressions/add", data={"csrf": token, "email": "Leaver@Dest.test"})
        assert added.headers["location"] == "/suppressions?kind=unsubscribes&notice=suppression_added"
        assert addresses(http.get("/suppressions?kind=unsubscribes").text) == ["leaver@dest.test"]
        bad = http.post("/suppressions/add", data={"csrf": token, "email": HOSTILE})
        assert bad.status_code == 400 and "not an email address" in bad.text and "<script>" not in bad.text
    assert lists.get("bob", "leaver@dest.test") is None
    with browser(api) as http:
        sign_in(http, "bob")
        assert addresses(http.get("/suppressions?kind=unsubscribes").text) == []
        assert addresses(http.get("/suppressions").text) == ["shared@dest.test"]


def test_unsubscribe_groups_list_page_add_and_remove_only_the_accounts_own(api: APINode) -> None:
    alice, bob = api.node.app.accounts.get("alice"), api.node.app.accounts.get("bob")
    assert alice is not None and bob is not None
    groups = GroupService(api.node.app.engine)
    news = groups.create(alice.id, "News", HOSTILE)
    groups.add(alice.id, news.id, [f"reader{i:02d}@dest.test" for i in range(52)])
    bobs = groups.create(bob.id, "Bob's list")
    groups.add(bob.id, bobs.id, ["bobreader@dest.test"])
    with browser(api) as http:
        sign_in(http)
        listed = http.get("/suppressions/groups").text
        assert f'href="/suppressions/groups/{news.id}">News</a>' in listed and "Bob&#39;s list" not in listed
        assert "<td>52</td>" in listed and "<script>" not in listed and "&lt;script&gt;" in listed
        page = http.get(f"/suppressions/groups/{news.id}")
        assert addresses(page.text) == [f"reader{i:02d}@dest.test" for i in range(50)]
        second = http.get(f"/suppressions/groups/{news.id}?page=2").text
        assert addresses(second) == ["reader50@dest.test", "reader51@dest.test"]
        assert addresses(http.get(f"/suppressions/groups/{news.id}?q=READER1").text) == [
            f"reader{i}@dest.test" for i in range(10, 20)]
        token = form_token(page)
        for other in (bobs.id, 999999, "x", "-1"):  # bob's, unknown, malformed: the same 404
            assert http.get(f"/suppressions/groups/{other}").status_code == 404
            assert http.post(f"/suppressions/groups/{other}/add", data={"csrf": token, "email": "a@dest.test"}
                             ).status_code == 404
            assert http.post(f"/suppressions/groups/{other}/remove",
                             data={"csrf": token, "email": "bobreader@dest.test"}).status_code == 404
        assert groups.members(bob.id, bobs.id) == ["bobreader@dest.test"]
        assert http.post(f"/suppressions/groups/{news.id}/add", data={"email": "a@dest.test"}).status_code == 403
        added = http.post(f"/suppressions/groups/{news.id}/add", data={"csrf": token, "email": "New@Dest.test"})
        assert added.headers["location"] == f"/suppressions/groups/{news.id}?notice=group_added"
        removed = http.post(f"/suppressions/groups/{news.id}/remove", data={
            "csrf": token, "email": "reader00@dest.test", "back": f"/suppressions/groups/{news.id}?page=2"})
        assert removed.headers["location"] == f"/suppressions/groups/{news.id}?page=2&notice=group_removed"
        members = groups.members(alice.id, news.id)
        assert members is not None and "new@dest.test" in members and "reader00@dest.test" not in members
