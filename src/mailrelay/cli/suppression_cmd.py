"""`mailrelay suppression list | add | remove`: the addresses an account no longer sends to."""

from __future__ import annotations

import argparse
import dataclasses

from mailrelay.accounts.suppressions import SuppressionService, normalize_address
from mailrelay.cli.common import open_from_args
from mailrelay.cli.output import format_table, format_time, to_json


def add_arguments(suppression: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay suppression` (its parser made by cli/main.py)."""
    s = suppression.add_subparsers(dest="suppression_command", metavar="COMMAND", required=True)

    p = s.add_parser("list", help="list suppressed addresses")
    p.add_argument("--account", metavar="NAME", default=None, help="only this account's list")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = s.add_parser("add", help="stop sending to an address (hard bounces are added automatically)")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--reason", default="", metavar="TEXT", help="why, for the record")
    p.set_defaults(func=cmd_add)

    p = s.add_parser("remove", help="send to an address again")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_remove)


def _service(args: argparse.Namespace) -> SuppressionService:
    _, engine = open_from_args(args)
    return SuppressionService(engine)


def cmd_list(args: argparse.Namespace) -> int:
    entries = _service(args).list(args.account)
    if args.json:
        print(to_json([dataclasses.asdict(e) for e in entries]))
    elif not entries:
        print("no suppressed addresses" + (f" for account {args.account}" if args.account else ""))
    else:
        rows = [(e.account, e.address, e.reason or "-", format_time(e.created_at)) for e in entries]
        print(format_table(("account", "address", "reason", "added"), rows))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    normalize_address(args.address)  # a bad address is reported before the database is opened
    svc = _service(args)
    existing = svc.get(args.account, args.address)
    if existing is not None:
        print(f"{existing.address} was already suppressed for account {existing.account} "
              f"(since {format_time(existing.created_at)})")
        return 0
    entry = svc.add(args.account, args.address, args.reason)
    print(f"suppressed {entry.address} for account {entry.account}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    normalize_address(args.address)
    entry = _service(args).remove(args.account, args.address)
    print(f"removed {entry.address} from the suppression list of account {entry.account}")
    return 0
