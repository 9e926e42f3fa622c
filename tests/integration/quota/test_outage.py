"""Quota through a database outage: what a transaction reserved at RCPT and could not send is
given back once the database is back (given back during the outage it failed, and the account
kept those emails counted for the rest of its day and month); a message whose commit went
through although its sender was told 451 keeps its count."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from mailrelay.quota.usage import counts, reserve
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts
from mailrelay.submission.policy import Held
from tests.integration.quota.conftest import NOON, Clock, data, rcpts, trusted
from tests.integration.quota.test_ehlo_size import Outage, outage  # noqa: F401  (fixture)
from tests.integration.smtp.conftest import Node

QuotaNode = Callable[..., tuple[Node, Clock]]


def _usage(db_url: str, account: str) -> tuple[int, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).scalar_one()
            return counts(conn, account_id, NOON)
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_reservations_of_a_message_refused_by_an_outage_are_given_back_when_the_database_returns(
        quota_node: QuotaNode, outage: Outage, db_url: str) -> None:  # noqa: F811
    assert outage.proxy is not None
    node, _ = quota_node("[plans.free]\ndaily_limit = 10\n" + outage.config)
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com", "b@example.com"])] == [250, 250]
    assert _usage(db_url, "bob") == (2, 2)  # reserved before the 250 to RCPT
    outage.begin(node)
    code, text = data(c)
    assert code == 451, text  # not stored: the two are to be given back, and cannot be yet
    time.sleep(1.0)
    outage.proxy.restore()
    deadline = time.monotonic() + 15
    while _usage(db_url, "bob") != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _usage(db_url, "bob") == (0, 0)


def test_a_reservation_is_kept_for_a_message_stored_after_all(
        engine: sa.Engine, add_message: Callable[..., str]) -> None:
    """The commit of DATA can succeed with its answer lost (the server crashed in between): the
    sender was told 451, the message is stored and will be sent, so its count stays."""
    add_message("Q1", account="bob")
    with engine.begin() as conn:
        bob = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "bob")).scalar_one()
        assert reserve(conn, bob, 2, daily_limit=10, monthly_limit=0, now=NOON) is None
    stored, lost = Held(bob, queue_id="Q1"), Held(bob, queue_id="Q2")
    for held in (stored, lost):
        held.add(NOON)
    with engine.begin() as conn:
        stored.release(conn)
        assert counts(conn, bob, NOON) == (2, 2)
        lost.release(conn)
        assert counts(conn, bob, NOON) == (1, 1)
