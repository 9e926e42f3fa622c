"""`mailrelay events`: what happened to mail, newest last; `--follow` keeps watching."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from typing import Any

from mailrelay.cli.common import open_from_args, row_limit
from mailrelay.cli.output import format_table, printable, to_json
from mailrelay.events.query import EventEntry, account_id, read_events

FOLLOW_POLL = 0.5  # seconds between looks for new events
HEADERS = ("time", "account", "message", "recipient", "event", "attempt", "mx", "reply")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay events` (its parser made by cli/main.py)."""
    p.add_argument("--account", metavar="NAME", help="only this account's events")
    p.add_argument("--message", metavar="ID", help="only events of this queue id")
    p.add_argument("--type", metavar="TYPE", help="only events of this type, e.g. delivered")
    p.add_argument("--limit", type=row_limit, default=50, metavar="N",
                   help="show the newest N events (default 50), oldest first")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output (with --follow: one JSON object per line)")
    p.set_defaults(func=cmd_events)


def _time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _row(e: EventEntry, reply_width: int) -> tuple[object, ...]:
    text = e.reply or e.detail or None
    if text is not None and len(text) > reply_width:
        text = text[:reply_width - 1] + "…"
    return (_time(e.at), e.account, e.message_id, e.recipient, e.type, e.attempt, e.mx_host, text)


def _reply_width() -> int:
    # The last column takes what the terminal has left; other columns are ~110 characters.
    return max(30, shutil.get_terminal_size((160, 24)).columns - 110)


def _json(e: EventEntry) -> dict[str, Any]:
    return dataclasses.asdict(e)


def cmd_events(args: argparse.Namespace) -> int:
    _, engine = open_from_args(args)
    account = account_id(engine, args.account) if args.account else None
    filters = {"account": account, "message": args.message, "type": args.type}
    found = read_events(engine, limit=args.limit, **filters)
    width = _reply_width()
    if args.json and not args.follow:
        print(to_json([_json(e) for e in found]))
        return 0
    if args.json:
        for e in found:
            print(json.dumps(_json(e), ensure_ascii=False))
    elif found:
        print(format_table(HEADERS, [_row(e, width) for e in found], align="<<<<<><<"))
    elif not args.follow:
        print("no events")
    if not args.follow:
        return 0
    last = found[-1].id if found else _last_id(engine)
    try:
        while True:
            sys.stdout.flush()
            time.sleep(FOLLOW_POLL)
            for e in read_events(engine, after=last, limit=500, **filters):
                last = e.id
                if args.json:
                    print(json.dumps(_json(e), ensure_ascii=False))
                else:
                    print("  ".join("-" if c is None else printable(str(c)) for c in _row(e, width)))
    except KeyboardInterrupt:
        return 0


def _last_id(engine: Any) -> int:
    newest = read_events(engine, limit=1)
    return newest[-1].id if newest else 0
