"""SIZE in the EHLO reply is the limit that applies to the session: after AUTH (or from a
trusted network) the account's plan's, when it is below the server's (RFC 1870 §4)."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.quota.conftest import trusted
from tests.integration.smtp.conftest import Node
from tests.integration.smtp.rawclient import auth_plain

QuotaNode = Callable[..., tuple[Node, object]]
SERVER = "[smtp]\nmax_message_size = 100000\n"


def sizes(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line[4:].startswith("SIZE")]


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


def test_trusted_network_gets_its_accounts_plan_and_others_the_server_limit(quota_node: QuotaNode) -> None:
    node, _ = quota_node(SERVER + "[plans.free]\nmax_message_size = 3000\n")
    c = trusted(node)  # bob, by address
    assert sizes(c.cmd("EHLO client.test")[1]) == ["SIZE 3000"]
    # A plan without a limit, or one above the server's, announces the server's.
    node2, _ = quota_node(SERVER + "[plans.free]\nmax_message_size = 500000\n")
    assert sizes(trusted(node2).cmd("EHLO client.test")[1]) == ["SIZE 100000"]
    node3, _ = quota_node(SERVER + "[plans.free]\nmax_message_size = 0\n")
    assert sizes(trusted(node3).cmd("EHLO client.test")[1]) == ["SIZE 100000"]
