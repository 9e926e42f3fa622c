"""`mailrelay account sandbox NAME [on|off]`: switch an account's sandbox (capture) mode and its
simulated failures ("chaos"), or show them."""

from __future__ import annotations

import argparse
from typing import Any

from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountError, AccountService
from mailrelay.cli.common import UsageError, open_from_args
from mailrelay.cli.output import to_json
from mailrelay.sandbox import chaos

EPILOG = """\
A sandbox account's mail passes every check real mail does (login, plan limits, sender domain,
DKIM signing) and is then captured: its recipients end `captured`, nothing is sent, and
`mailrelay inbox` shows it. Chaos answers a fraction of RCPT commands, or of messages at the
end of DATA, with a failure, to test how an application copes: e.g. --chaos-rcpt 0.2:451
refuses one recipient in five with "451 4.0.0". Each `on` replaces the chaos settings
(none given: no chaos); `off` clears them. Changes apply to new SMTP logins; sessions logged
in already keep the settings they started with. Capture is done by the delivery workers: with
[delivery] enabled = false, sandbox mail waits in the queue like any other.
"""


def add_account_arguments(acc: Any) -> None:
    """Add this module's subcommands to `mailrelay account`."""
    p = acc.add_parser("sandbox", help="switch sandbox mode (capture mail, never deliver) and chaos",
                       description=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("state", nargs="?", choices=("on", "off"), help="omit to show the current setting")
    p.add_argument("--chaos-rcpt", metavar="FRACTION[:CODE]",
                   help=f"with `on`: refuse this fraction (0-1) of RCPTs with CODE (4xx or 5xx, not 421; "
                        f"default {chaos.DEFAULT_CODE})")
    p.add_argument("--chaos-data", metavar="FRACTION[:CODE]",
                   help="with `on`: refuse this fraction of messages at the end of DATA, likewise")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sandbox)


def _failures(args: argparse.Namespace) -> dict[chaos.Stage, chaos.Failure]:
    out: dict[chaos.Stage, chaos.Failure] = {}
    given: tuple[tuple[chaos.Stage, str | None], ...] = (("rcpt", args.chaos_rcpt), ("data", args.chaos_data))
    for stage, value in given:
        if value is None:
            continue
        if args.state != "on":
            raise UsageError(f"--chaos-{stage} needs `on`: mailrelay account sandbox {args.name} on "
                             f"--chaos-{stage} {value}")
        try:
            out[stage] = chaos.parse_spec(value)
        except chaos.ChaosError as exc:
            raise UsageError(f"--chaos-{stage}: {exc}") from None
    return out


def cmd_sandbox(args: argparse.Namespace) -> int:
    failures = _failures(args)  # before opening the database: bad input fails fast
    _, engine = open_from_args(args)
    svc = AccountService(engine, make_hasher())
    if args.state is None:
        account = svc.get(args.name)
        if account is None:
            raise AccountError(f"no account named {args.name[:80]!r}")
    else:
        account = svc.set_sandbox(args.name, args.state == "on", chaos.to_json(failures))
    parsed = chaos.parse(account.chaos) if account.chaos else {}
    if args.json:
        print(to_json({"name": account.name, "sandbox": account.sandbox,
                       "chaos": {stage: {"fraction": f.fraction, "code": f.code} for stage, f in parsed.items()}}))
    elif account.sandbox:
        print(f"account {account.name}: sandbox on (mail is captured, see `mailrelay inbox`); "
              f"chaos: {chaos.describe(account.chaos)}")
    else:
        print(f"account {account.name}: sandbox off (mail is delivered)")
    return 0
