"""`mailrelay node list`: the delivering processes of every node sharing the database."""

from __future__ import annotations

import argparse
import time

from mailrelay.cli.common import open_from_args
from mailrelay.cli.output import format_table, format_time, to_json
from mailrelay.core.dates import format_age
from mailrelay.spool.nodes import listing, node_json, node_state


def add_arguments(node: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay node` (its parser made by cli/main.py)."""
    cmds = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    p = cmds.add_parser("list", help="each delivery process: host, pid, last heartbeat, recipients it holds "
                                     "(ages by this machine's clock; nodes judge each other by change, not by age)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    settings, engine = open_from_args(args)
    try:
        with engine.connect() as conn:
            found = listing(conn)
    finally:
        engine.dispose()
    now = time.time()
    dead_after = settings.delivery.dead_after
    if args.json:
        print(to_json([node_json(n, now, dead_after) for n in found]))
        return 0
    if not found:
        print("no delivery process is running (none has a heartbeat in this database)")
        return 0
    rows = [(n.name, n.host, n.pid, format_time(n.started_at), f"{format_age(now - n.heartbeat_at)} ago",
             node_state(now - n.heartbeat_at, dead_after), n.leased) for n in found]
    print(format_table(("name", "host", "pid", "started (UTC)", "heartbeat", "state", "leased"), rows,
                       align="<<><<<>"))
    return 0

