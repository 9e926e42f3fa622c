"""`mailrelay` imports only the module of the command it runs, and still knows every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailrelay.cli.main import COMMANDS, build_parser, command_word


@pytest.mark.parametrize(("argv", "word"), [
    (["account", "list"], "account"),
    (["-c", "x.toml", "queue", "list"], "queue"),
    (["--config", "account", "queue"], "queue"),  # the config file may be named like a command
    (["--config=x.toml", "status"], "status"),
    (["--", "events"], "events"),
    (["--version"], ""),
    ([], ""),
])
def test_the_command_word_is_found_past_the_global_options(argv: list[str], word: str) -> None:
    assert command_word(argv) == word


def test_a_command_imports_its_own_module_only() -> None:
    code = ("import sys; from mailrelay.cli.main import build_parser; "
            "build_parser('account').parse_args(['account', 'list']); "
            "print(sorted(m for m in sys.modules if m.startswith('mailrelay.cli.') and m.endswith('_cmd')), "
            "'mailrelay.delivery.outcomes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    # account's own module and the three it borrows from (plan, sandbox and webhook subcommands)
    assert out.split("] ")[0] + "]" == str(sorted(f"mailrelay.cli.{m}" for m in (
        "account_cmd", "plan_cmd", "sandbox_cmd", "webhook_cmd")))
    assert out.strip().endswith("False")  # nothing of the delivery code


def test_every_command_parses_its_own_help_alone_and_in_the_full_parser() -> None:
    full = build_parser()
    for name in COMMANDS:
        for parser in (full, build_parser(name)):
            with pytest.raises(SystemExit) as done:
                parser.parse_args([name, "--help"])
            assert done.value.code == 0
    with pytest.raises(SystemExit) as refused:  # a command's arguments are checked as before
        build_parser("queue").parse_args(["queue", "list", "--no-such-option"])
    assert refused.value.code == 2
