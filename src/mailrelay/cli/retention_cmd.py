"""`mailrelay retention run [--dry-run]`: one retention sweep now, with what it removed.

The same batches as the serve process's background sweep (store.retention), each its own
short transaction, so it may run beside a live node. `--dry-run` counts what a sweep would
remove and changes nothing. A sweep that takes more than a second reports its progress on
standard error once a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from mailrelay.cli.common import open_from_args
from mailrelay.cli.output import format_size, format_table, to_json
from mailrelay.spool.retention import plan_for
from mailrelay.store import retention as R

WHAT = {"bodies": "bodies of finished mail", "messages": "finished mail, with its rows",
        "sandbox": "sandbox captures", "inbound": "received mail"}


def add_arguments(ret: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay retention` (its parser made by cli/main.py)."""
    cmds = ret.add_subparsers(dest="retention_command", metavar="COMMAND", required=True)
    p = cmds.add_parser("run", help="sweep once now and print what was removed, per kind")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    settings, engine = open_from_args(args)
    s = settings.retention
    plan = plan_for(s, time.time())
    started = last = time.monotonic()

    def progress(total: R.Removed) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            verb = "would remove" if args.dry_run else "removed"
            print(f"mailrelay: retention: {total.kind}: {verb} {total.messages} messages so far "
                  f"({now - started:.0f}s)", file=sys.stderr, flush=True)

    try:
        totals = R.sweep(engine, plan, batch=s.batch, dry_run=args.dry_run, progress=progress)
    finally:
        engine.dispose()
    days = {"bodies": s.bodies_days, "messages": s.messages_days, "sandbox": s.sandbox_days,
            "inbound": s.inbound_days}
    if args.json:
        print(to_json({"dry_run": args.dry_run,
                       "kinds": [{**asdict(totals[k]), "days": days[k]} if k in totals
                                 else {"kind": k, "days": 0, "kept": True} for k in R.KINDS]}))
        return 0
    rows: list[list[object]] = []
    for kind in R.KINDS:
        t = totals.get(kind)
        if t is None:
            rows.append([kind, "for ever", "-", "-", "-", "-", "-", "kept (period 0)"])
            continue
        rows.append([kind, f"{days[kind]:g}", t.messages, t.recipients if kind != "bodies" else "-",
                     t.attempts if kind != "bodies" else "-", t.events if kind != "bodies" else "-",
                     format_size(t.bytes), WHAT[kind]])
    what = "would remove" if args.dry_run else "removed"
    print(format_table(["kind", "days", "messages", "recipients", "attempts", "events", "body bytes", what],
                       rows, align="<>>>>>><"))
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0
