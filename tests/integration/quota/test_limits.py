"""Plan limits at the SMTP door: daily and monthly counts, recipients per message, message
size, rate; what a refused or abandoned transaction gives back. Both databases."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.integration.quota.conftest import (
    DAY,
    NOON,
    Clock,
    data,
    policy,
    rcpts,
    reset,
    set_plan,
    settle,
    stored_recipients,
    trusted,
    usage_of,
    wait_usage,
)
from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import RawClient

QuotaNode = Callable[..., tuple[Node, Clock]]
RESET_TEXT = "resets at 2026-11-28 00:00:00 UTC"


def test_the_201st_recipient_of_the_day_gets_451(quota_node: QuotaNode) -> None:
    node, _ = quota_node()  # built-in free plan: 200 a day
    c = node.raw_login()
    for m in range(3):  # 3 x 66 = 198 accepted
        replies = rcpts(c, [f"r{m}-{i}@example.com" for i in range(66)], sender="alice@example.net")
        assert [code for code, _ in replies] == [250] * 66
        code, text = data(c)
        assert code == 250, text
    # One transaction crossing the limit: the 199th and 200th stay accepted, the 201st waits.
    replies = rcpts(c, ["last1@example.com", "last2@example.com", "over@example.com"],
                    sender="alice@example.net")
    assert [code for code, _ in replies[:2]] == [250, 250]
    code, text = replies[2]
    assert code == 451 and text.startswith("451 4.7.1 Maximum credits exceeded"), text
    assert "allows 200 emails a day" in text and RESET_TEXT in text
    code, text = data(c)
    assert code == 250, text
    assert [r["address"] for r in node.stored()[-1]["recipients"]] == ["last1@example.com", "last2@example.com"]
    # A new transaction, a new session: still refused, and the count stays at the limit.
    assert rcpts(c, ["again@example.com"], sender="alice@example.net")[0][0] == 451
    c.cmd("RSET")
    other = node.raw_login()
    code, text = rcpts(other, ["x@example.com"], sender="alice@example.net")[0]
    assert code == 451 and RESET_TEXT in text
    assert stored_recipients(node) == 200
    assert usage_of(node, "alice") == (200, 200)
    assert usage_of(node, "bob") == (0, 0)  # another account's count is its own


def test_a_new_utc_day_resets_the_count(quota_node: QuotaNode) -> None:
    node, clock = quota_node("[plans.free]\ndaily_limit = 2\n")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com", "c@example.com"])] == [250, 250, 451]
    assert data(c)[0] == 250
    clock.now = NOON + 8 * 3600 + 59 * 60  # 23:59 the same day: still refused
    assert rcpts(c, ["d@example.com"])[0][0] == 451
    c.cmd("RSET")
    clock.now = NOON + DAY  # the next day, no sleeping
    assert [code for code, _ in rcpts(c, ["d@example.com", "e@example.com", "f@example.com"])] == [250, 250, 451]
    assert data(c)[0] == 250
    assert usage_of(node, "bob", NOON) == (2, 4)  # day 1; the month holds both days
    assert usage_of(node, "bob", NOON + DAY) == (2, 4)
    assert stored_recipients(node) == 4


def test_monthly_limit(quota_node: QuotaNode) -> None:
    node, clock = quota_node("[plans.capped]\nmonthly_limit = 3\n")
    set_plan(node, "bob", "capped")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com"])] == [250, 250]
    assert data(c)[0] == 250
    clock.now = NOON + DAY  # 28 November: no daily limit, the month is what counts
    replies = rcpts(c, ["c@example.com", "d@example.com"])
    assert replies[0][0] == 250
    code, text = replies[1]
    assert code == 451 and text.startswith("451 4.7.1 Maximum credits exceeded"), text
    assert "allows 3 emails a month" in text and "resets at 2026-12-01 00:00:00 UTC" in text
    assert data(c)[0] == 250
    # The refused month must not leave the day counted.
    assert usage_of(node, "bob", NOON + DAY) == (1, 3)
    clock.now = NOON + 4 * DAY  # 1 December
    assert rcpts(c, ["e@example.com"])[0][0] == 250
    assert data(c)[0] == 250
    assert usage_of(node, "bob", NOON + 4 * DAY) == (1, 1)


def test_rset_and_lost_connections_give_reservations_back(quota_node: QuotaNode) -> None:
    node, _ = quota_node("[plans.free]\ndaily_limit = 3\n")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com", "c@example.com"])] == [250] * 3
    assert usage_of(node, "bob") == (3, 3)  # reserved before the 250 to RCPT
    assert c.cmd("RSET")[0] == 250
    assert wait_usage(node, "bob", (0, 0)) == (0, 0)
    # A client that goes away after its RCPTs were accepted...
    gone = trusted(node)
    assert [code for code, _ in rcpts(gone, ["a@example.com", "b@example.com"])] == [250, 250]
    reset(gone)
    assert wait_usage(node, "bob", (0, 0)) == (0, 0)
    # ...or while its RCPT is still being reserved, or after its last command (FIN).
    for close in (reset, RawClient.close):
        gone = trusted(node)
        gone.send(b"MAIL FROM:<app@example.net>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        close(gone)
        settle(node)
        assert usage_of(node, "bob") == (0, 0)
    # A message refused at the end of DATA gives its recipients back too.
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com"])] == [250, 250]
    code, text = data(c, b"Subject: bare\nnewline\r\n")
    assert code == 550, text
    assert wait_usage(node, "bob", (0, 0)) == (0, 0)
    # All three are there for a message that is sent.
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com", "c@example.com"])] == [250] * 3
    assert data(c)[0] == 250
    assert usage_of(node, "bob") == (3, 3)
    assert stored_recipients(node) == 3


def test_accounts_without_limits_are_counted_with_the_message(quota_node: QuotaNode) -> None:
    node, _ = quota_node()
    set_plan(node, "bob", "unlimited")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com"])] == [250, 250]
    assert usage_of(node, "bob") == (0, 0)  # nothing reserved at RCPT: no extra commit
    assert data(c)[0] == 250
    assert usage_of(node, "bob") == (2, 2)


def test_max_recipients_per_message(quota_node: QuotaNode) -> None:
    node, _ = quota_node("[plans.free]\nmax_recipients_per_message = 2\n")
    c = trusted(node)
    replies = rcpts(c, ["a@example.com", "b@example.com", "c@example.com"])
    assert [code for code, _ in replies] == [250, 250, 452]
    assert replies[2][1].startswith("452 4.5.3 Too many recipients"), replies[2][1]
    assert data(c)[0] == 250
    assert len(node.stored()[0]["recipients"]) == 2
    # The next message may have two again.
    assert [code for code, _ in rcpts(c, ["c@example.com", "d@example.com"])] == [250, 250]
    assert usage_of(node, "bob") == (4, 4)


def test_max_message_size(quota_node: QuotaNode) -> None:
    node, _ = quota_node("[plans.free]\nmax_message_size = 1000\ndaily_limit = 10\n")
    c = trusted(node)
    code, text = c.cmd("MAIL FROM:<app@example.net> SIZE=2000")
    assert code == 552 and text.startswith("552 5.3.4"), text
    assert "allows 1000 bytes" in text
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]
    code, text = data(c, b"Subject: big\r\n\r\n" + b"x" * 1200 + b"\r\n")
    assert code == 552 and text.startswith("552 5.3.4"), text
    assert wait_usage(node, "bob", (0, 0)) == (0, 0)  # refused: the reservation is given back
    assert [code for code, _ in rcpts(c, ["a@example.com"], sender="app@example.net")] == [250]
    assert data(c, b"Subject: small\r\n\r\n" + b"x" * 500 + b"\r\n")[0] == 250
    assert c.cmd("MAIL FROM:<app@example.net> SIZE=1000")[0] == 250
    assert stored_recipients(node) == 1


@pytest.mark.parametrize("daily_limit", [0, 200])  # a round trip of its own, or with the day's count
def test_rate_per_minute(quota_node: QuotaNode, daily_limit: int) -> None:
    node, clock = quota_node(f"[plans.free]\nrate_per_minute = 3\ndaily_limit = {daily_limit}\n")
    c = trusted(node)
    replies = rcpts(c, ["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
    assert [code for code, _ in replies] == [250, 250, 250, 451]
    assert replies[3][1].startswith("451 4.7.1 Rate limit exceeded"), replies[3][1]
    assert "3 emails a minute; try again in 20 seconds" in replies[3][1]
    assert data(c)[0] == 250
    clock.now = NOON + 20  # one more email's worth of minute has gone by
    assert [code for code, _ in rcpts(c, ["d@example.com", "e@example.com"])] == [250, 451]
    assert data(c)[0] == 250
    assert usage_of(node, "bob") == (4, 4)


def test_a_plan_gone_from_the_config_means_the_default_plan(quota_node: QuotaNode,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    node, _ = quota_node("[plans.free]\ndaily_limit = 2\n")
    set_plan(node, "bob", "gold")
    caplog.set_level(logging.WARNING, logger="mailrelay.quota")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com", "c@example.com"])] == [250, 250, 451]
    warnings = [r.getMessage() for r in caplog.records if "not in the config" in r.getMessage()]
    assert len(warnings) == 1 and "'gold'" in warnings[0] and "'free'" in warnings[0], warnings


def test_a_subject_email_cannot_decode_is_kept_as_written(quota_node: QuotaNode) -> None:
    """"=?utf-8?b?a?=" (bad base64) made email.header raise HeaderParseError out of accept():
    the session dropped with the message refused and its reservation never given back."""
    node, _ = quota_node("[plans.free]\ndaily_limit = 10\n")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]
    code, text = data(c, b"Subject: =?utf-8?b?a?=\r\n\r\nhello\r\n")
    assert code == 250, text
    assert node.stored()[-1]["subject"] == "=?utf-8?b?a?="
    assert c.cmd("QUIT")[0] == 221
    assert usage_of(node, "bob") == (1, 1)


@pytest.mark.parametrize("first, then", [("free", "unlimited"), ("unlimited", "free")])
def test_plan_changed_between_two_rcpts_counts_every_recipient_once(quota_node: QuotaNode,
                                                                    first: str, then: str) -> None:
    """The trusted account is looked up again during a transaction: some of its recipients
    were reserved at RCPT, the others must still be counted with the message."""
    node, _ = quota_node("[plans.free]\ndaily_limit = 10\n")
    policy(node).cache_seconds = 0.0  # the plan is read again at every RCPT
    set_plan(node, "bob", first)
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]
    set_plan(node, "bob", then)
    assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
    assert data(c)[0] == 250
    assert c.cmd("QUIT")[0] == 221
    assert usage_of(node, "bob") == (2, 2)
