"""SIZE in the EHLO reply is the limit that applies to the session: after AUTH (or from a
trusted network) the account's plan's, when it is below the server's (RFC 1870 §4).

EHLO reads no database: the plan comes from the logged-in account, or from the trusted
network's account as last looked up (at MAIL), however old. During a database outage EHLO is
answered as usual, with the server's SIZE if nothing is known.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.quota.conftest import TRUSTED, policy, trusted
from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import auth_plain
from tests.support.tcpproxy import TCPProxy

QuotaNode = Callable[..., tuple[Node, object]]
SERVER = "[smtp]\nmax_message_size = 100000\n"
PLAN_3000 = "[plans.free]\nmax_message_size = 3000\n"


def sizes(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line[4:].startswith("SIZE")]


class Outage:
    """Takes a node's database away for that node alone: PostgreSQL through a proxy that is
    cut (connections reset, new ones closed at once); SQLite by removing its directory."""

    def __init__(self, db_url: str) -> None:
        self.url = db_url
        self.proxy: TCPProxy | None = None
        if db_url.startswith("postgresql"):
            parts = urlsplit(db_url)
            self.proxy = TCPProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
            self.url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{self.proxy.port}"))

    @property
    def config(self) -> str:
        return f'[storage]\nurl = "{self.url}"\n'

    def begin(self, node: Node) -> None:
        if self.proxy is not None:
            self.proxy.cut()
            return
        node.app.engine.dispose()  # no open file left to read through
        shutil.rmtree(Path(self.url.split("///", 1)[1]).parent)


@pytest.fixture
def outage(db_url: str) -> Iterator[Outage]:
    o = Outage(db_url)
    yield o
    if o.proxy is not None:
        o.proxy.close()


def test_ehlo_after_auth_announces_the_plan_limit(node_factory: Callable[..., Node]) -> None:
    node = node_factory(SERVER + "[plans.free]\nmax_message_size = 2000\n")  # no trusted network
    c = node.raw("submission")
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS")[0] == 220
    c.starttls(node.client_ssl)
    code, text = c.cmd("EHLO client.test")
    assert sizes(text) == ["SIZE 100000"], "before AUTH nobody's plan is known"
    assert c.cmd(auth_plain("alice", "correct-horse-battery-staple"))[0] == 235
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and sizes(text) == ["SIZE 2000"], text
    # ...and it is what MAIL checks.
    assert c.cmd("MAIL FROM:<alice@example.net> SIZE=2001")[0] == 552
    assert c.cmd("MAIL FROM:<alice@example.net> SIZE=2000")[0] == 250


def look_up_trusted_account(node: Node) -> None:
    """A MAIL from the trusted network: the policy looks its account up (and keeps it)."""
    c = trusted(node)
    assert c.cmd("MAIL FROM:<app@example.net>")[0] == 250
    assert c.cmd("QUIT")[0] == 221


def test_trusted_network_gets_its_accounts_plan_and_others_the_server_limit(quota_node: QuotaNode) -> None:
    node, _ = quota_node(SERVER + PLAN_3000)
    c = trusted(node)  # bob, by address
    assert sizes(c.cmd("EHLO client.test")[1]) == ["SIZE 100000"], "not looked up yet: the server's"
    look_up_trusted_account(node)
    assert sizes(c.cmd("EHLO client.test")[1]) == ["SIZE 3000"]
    # A plan without a limit, or one above the server's, announces the server's.
    node2, _ = quota_node(SERVER + "[plans.free]\nmax_message_size = 500000\n")
    look_up_trusted_account(node2)
    assert sizes(trusted(node2).cmd("EHLO client.test")[1]) == ["SIZE 100000"]
    node3, _ = quota_node(SERVER + "[plans.free]\nmax_message_size = 0\n")
    look_up_trusted_account(node3)
    assert sizes(trusted(node3).cmd("EHLO client.test")[1]) == ["SIZE 100000"]


def test_ehlo_from_a_trusted_network_during_a_database_outage_gets_the_server_size(
        node_factory: Callable[..., Node], outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailrelay")
    node = node_factory(TRUSTED + SERVER + PLAN_3000 + outage.config)  # bob never looked up
    outage.begin(node)
    c = node.raw("smtp")
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and sizes(text) == ["SIZE 100000"], text
    assert c.cmd("NOOP")[0] == 250  # the session goes on
    smtp_records = [r for r in caplog.records if r.name.startswith("mailrelay.smtp")]
    assert not [r for r in smtp_records if r.exc_info or "internal error" in r.getMessage()], caplog.text


def test_ehlo_from_a_trusted_network_uses_the_account_last_looked_up_however_old(
        node_factory: Callable[..., Node], outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailrelay")
    node = node_factory(TRUSTED + SERVER + PLAN_3000 + outage.config)
    policy(node).cache_seconds = 0.0  # every look-up is out of date at once
    look_up_trusted_account(node)
    outage.begin(node)
    c = node.raw("smtp")
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and sizes(text) == ["SIZE 3000"], text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_mail_from_a_trusted_network_during_an_outage_is_a_clean_451_or_uses_the_account_last_read(
        node_factory: Callable[..., Node], outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailrelay")
    never = node_factory(TRUSTED + SERVER + outage.config)
    outage.begin(never)
    c = trusted(never)
    code, text = c.cmd("MAIL FROM:<app@example.net>")
    assert code == 451 and "4.3.0 Queue storage unavailable" in text, text
    assert c.cmd("MAIL FROM:<app@example.net>")[0] == 451
    assert c.cmd("NOOP")[0] == 250  # the session goes on
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1, caplog.text


def test_mail_from_a_trusted_network_goes_on_with_the_account_last_read(
        node_factory: Callable[..., Node], outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailrelay")
    node = node_factory(TRUSTED + SERVER + outage.config)
    policy(node).cache_seconds = 0.0
    look_up_trusted_account(node)
    outage.begin(node)
    c = trusted(node)
    assert c.cmd("MAIL FROM:<app@example.net>")[0] == 250
    assert not [r for r in caplog.records if r.exc_info], caplog.text
