"""`mailrelay account usage NAME` and `mailrelay account plan NAME PLAN`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from mailrelay.accounts.service import AccountService
from mailrelay.quota.usage import add_usage, day_period, day_reset, month_period, month_reset
from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from tests.integration.cli.conftest import CLI, InProcess

PLANS = "[plans.pro]\nmonthly_limit = 5000\nrate_per_minute = 60\nmax_recipients_per_message = 50\n"


@pytest.fixture
def alice(db_url: str, cli: CLI, fast_hasher: PasswordHasher) -> Iterator[sa.Engine]:
    """Account alice (plan free) with 7 emails sent today; the engine on its database."""
    with cli.config.open("a") as fh:
        fh.write(PLANS)
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    account = AccountService(engine, fast_hasher).create("alice", "correct-horse-battery")
    with engine.begin() as conn:
        add_usage(conn, {account.id: 7}, time.time())
    yield engine
    engine.dispose()


def test_usage_table(alice: sa.Engine, inproc: InProcess) -> None:
    now = time.time()
    result = inproc("account", "usage", "alice")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "account alice, plan free"
    assert lines[1].split() == ["PERIOD", "SENT", "LIMIT", "LEFT", "RESETS", "(UTC)"]
    reset_day = time.strftime("%Y-%m-%d %H:%M", time.gmtime(day_reset(now)))
    reset_month = time.strftime("%Y-%m-%d %H:%M", time.gmtime(month_reset(now)))
    assert lines[2].split() == ["today", day_period(now)[1:], "7", "200", "193", *reset_day.split()]
    assert lines[3].split() == ["month", month_period(now)[1:], "7", "-", "-", *reset_month.split()]
    assert lines[4] == "per message: at most 1000 recipients and 30.0M; rate: no limit"


def test_usage_json(alice: sa.Engine, inproc: InProcess) -> None:
    now = time.time()
    result = inproc("account", "usage", "alice", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["account"] == "alice" and data["plan"] == "free" and data["limits_of"] == "free"
    assert data["today"] == {"period": day_period(now)[1:], "sent": 7, "limit": 200, "remaining": 193,
                             "resets_at": day_reset(now)}
    assert data["month"] == {"period": month_period(now)[1:], "sent": 7, "limit": None, "remaining": None,
                             "resets_at": month_reset(now)}
    assert (data["max_recipients_per_message"], data["max_message_size"], data["rate_per_minute"]) == \
        (1000, 31_457_280, None)


def test_plan_changes_the_limits(alice: sa.Engine, cli: CLI, inproc: InProcess) -> None:
    result = cli("account", "plan", "alice", "pro")  # the real command, in a subprocess
    assert result.code == 0, result.err
    assert result.out.strip() == "account alice is now on plan pro (was free); new SMTP sessions use it"
    data = json.loads(inproc("account", "usage", "alice", "--json").out)
    assert data["plan"] == "pro"
    assert data["today"]["limit"] is None and data["month"]["limit"] == 5000
    assert data["month"]["remaining"] == 4993
    assert (data["max_recipients_per_message"], data["rate_per_minute"]) == (50, 60)
    table = inproc("account", "usage", "alice").out.splitlines()
    assert table[-1] == "per message: at most 50 recipients and 30.0M; rate: 60 emails a minute"
    listed = json.loads(inproc("account", "list", "--json").out)
    assert [(a["name"], a["plan"]) for a in listed] == [("alice", "pro")]


def test_a_plan_no_longer_configured(alice: sa.Engine, inproc: InProcess) -> None:
    with alice.begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET plan = 'gold'")
    result = inproc("account", "usage", "alice")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == \
        "account alice, plan gold (not in the config: the limits of the default plan free apply)"
    assert json.loads(inproc("account", "usage", "alice", "--json").out)["limits_of"] == "free"


@pytest.mark.parametrize(("args", "message"), [
    (("plan", "alice", "gold"), "unknown plan 'gold': expected one of free, unlimited, pro"),
    (("plan", "nobody", "pro"), "no account named 'nobody'"),
    (("usage", "nobody"), "no account named 'nobody'"),
])
def test_mistakes_are_one_line_and_exit_2(alice: sa.Engine, inproc: InProcess, args: tuple[str, ...],
                                          message: str) -> None:
    result = inproc("account", *args)
    assert result.code == 2
    assert message in result.error_line
    with alice.connect() as conn:
        assert conn.exec_driver_sql("SELECT plan FROM accounts").scalar_one() == "free"
