"""`mailrelay account sandbox NAME on|off [--chaos-rcpt F:CODE] [--chaos-data F:CODE]` against a
running node: the chosen failures are answered on the wire, fraction 1 always, 0 never."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.cli.conftest import InProcess
from tests.integration.smtp.conftest import PASSWORD, Node

MSG = b"From: sandy@sender.test\r\nTo: bob@dest.test\r\nSubject: chaos\r\n\r\nhello\r\n"


def try_send(node: Node) -> tuple[int, bytes, int | None, bytes]:
    """(RCPT code, text, DATA code or None, text) of one message from sandy, on a new login."""
    client = node.submission("sandy", PASSWORD)
    client.ehlo()
    client.mail("sandy@sender.test")
    rcpt_code, rcpt_text = client.rcpt("bob@dest.test")
    data_code, data_text = (None, b"")
    if rcpt_code == 250:
        data_code, data_text = client.data(MSG)
    client.quit()
    return rcpt_code, rcpt_text, data_code, data_text


def test_chaos_on_the_wire(node_factory: Callable[..., Node], inproc: InProcess) -> None:
    node = node_factory()  # delivery off: accepted mail just stays queued
    node.app.accounts.create("sandy", PASSWORD, plan="unlimited")
    assert inproc("account", "sandbox", "sandy").out == "account sandy: sandbox off (mail is delivered)\n"

    on = inproc("account", "sandbox", "sandy", "on", "--chaos-rcpt", "1:550")
    assert on.code == 0, on.err
    assert on.out == ("account sandy: sandbox on (mail is captured, see `mailrelay inbox`); "
                      "chaos: RCPT 100% 550\n")
    rcpt_code, rcpt_text, _, _ = try_send(node)
    assert (rcpt_code, rcpt_text) == (550, b"5.0.0 sandbox chaos: simulated failure (account sandy)")

    inproc("account", "sandbox", "sandy", "on", "--chaos-data", "1:452")  # replaces the RCPT chaos
    rcpt_code, _, data_code, data_text = try_send(node)
    assert (rcpt_code, data_code) == (250, 452) and data_text.startswith(b"4.0.0 sandbox chaos")
    assert node.stored() == []

    inproc("account", "sandbox", "sandy", "on", "--chaos-rcpt", "0:550", "--chaos-data", "0")
    shown = json.loads(inproc("account", "sandbox", "sandy", "--json").out)
    assert shown == {"name": "sandy", "sandbox": True, "chaos": {"rcpt": {"fraction": 0.0, "code": 550},
                                                                  "data": {"fraction": 0.0, "code": 451}}}
    for _ in range(10):
        assert try_send(node)[::2] == (250, 250)
    assert {m["sandbox"] for m in node.stored()} == {True}

    off = inproc("account", "sandbox", "sandy", "off")
    assert off.out == "account sandy: sandbox off (mail is delivered)\n"
    assert node.app.accounts.get("sandy").chaos is None  # type: ignore[union-attr]
    assert try_send(node)[::2] == (250, 250)
    assert node.stored()[-1]["sandbox"] is False


@pytest.mark.parametrize(("args", "says"), [
    (["on", "--chaos-rcpt", "2"], "--chaos-rcpt: fraction 2 is not between 0 and 1"),
    (["on", "--chaos-data", "0.5:421"], "--chaos-data: code 421 is not a 4xx or 5xx reply code"),
    (["on", "--chaos-data", "0.5:250"], "--chaos-data: code 250"),
    (["on", "--chaos-rcpt", "lots"], "--chaos-rcpt: 'lots' is not FRACTION[:CODE]"),
    (["off", "--chaos-rcpt", "0.1"], "--chaos-rcpt needs `on`"),
    (["--chaos-data", "0.1"], "--chaos-data needs `on`"),
])
def test_bad_chaos_options_are_one_line_errors(inproc: InProcess, args: list[str], says: str) -> None:
    inproc("account", "create", "sandy", "--sandbox")
    result = inproc("account", "sandbox", "sandy", *args)
    assert result.code == 2 and says in result.error_line, result


def test_unknown_account_and_create_sandbox(inproc: InProcess) -> None:
    result = inproc("account", "sandbox", "nobody", "on")
    assert result.code == 2 and "no account named 'nobody'" in result.error_line
    assert inproc("account", "sandbox", "nobody").code == 2
    created = inproc("account", "create", "tester", "--sandbox")
    assert created.code == 0 and "sandbox" in created.out.splitlines()[0]
    assert inproc("account", "sandbox", "tester").out.startswith("account tester: sandbox on")
    assert "no captured messages" in inproc("inbox", "list", "--account", "tester").out
    assert inproc("inbox", "show", "NOPE").error_line == (
        "mailrelay: error: no captured message 'NOPE' (see `mailrelay inbox list`)")
