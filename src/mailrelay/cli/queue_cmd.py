"""`mailrelay queue list | show`: what is waiting in the spool, read-only."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from mailrelay.cli.common import UsageError, open_from_args
from mailrelay.cli.output import (
    format_age,
    format_size,
    format_table,
    format_time,
    printable,
    to_json,
)
from mailrelay.spool.reader import MessageDetail, QueueEntry, QueueReader


def add_arguments(sub: Any) -> None:
    queue = sub.add_parser("queue", help="inspect the mail queue")
    q = queue.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    p = q.add_parser("list", help="list messages, newest first")
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N",
                   help="show at most N messages (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = q.add_parser("show", help="show one message: envelope, recipients, headers")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _reader(args: argparse.Namespace) -> QueueReader:
    _, engine = open_from_args(args)
    return QueueReader(engine)


def _recipients_cell(e: QueueEntry) -> str:
    if not e.recipients:
        return "-"
    more = f" +{e.recipient_count - 1}" if e.recipient_count > 1 else ""
    return e.recipients[0] + more


def cmd_list(args: argparse.Namespace) -> int:
    reader = _reader(args)
    entries = reader.list(limit=args.limit)
    if args.json:
        print(to_json([dataclasses.asdict(e) for e in entries]))
        return 0
    if not entries:
        print("queue is empty")
        return 0
    now = time.time()
    rows = [(e.id, e.account, e.mail_from or "<>", _recipients_cell(e), format_size(e.size),
             e.status, format_age(now - e.created_at)) for e in entries]
    print(format_table(("id", "account", "from", "recipients", "size", "status", "age"), rows,
                       align="<<<<><>"))
    total = reader.count()
    if total > len(entries):
        print(f"({len(entries)} of {total} messages shown; use --limit)")
    return 0


def _params(params: dict[str, Any]) -> str:
    return " ".join(k if v is None else f"{k}={v}" for k, v in params.items())


def _show_text(m: MessageDetail) -> str:
    age = format_age(time.time() - m.created_at)
    tls = f"{m.tls_version} {m.tls_cipher or ''}".strip() if m.tls_version else "none"
    fields = [
        ("queue id", m.id),
        ("account", m.account),
        ("from", f"<{m.mail_from}> {_params(m.mail_params)}".rstrip()),
        ("status", m.status),
        ("created", f"{format_time(m.created_at)} UTC ({age} ago)"),
        ("size", f"{format_size(m.size)} ({m.size} bytes)"),
        ("client", f"{m.client_ip} (helo {m.helo})"),
        ("auth user", m.auth_user or "-"),
        ("tls", tls),
        ("listener", m.listener),
    ]
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{(k + ':').ljust(width)} {printable(v)}" for k, v in fields]
    rows = [(r.address, _params(r.params) or "-", r.status, r.attempts,
             format_time(r.next_attempt_at), r.last_reply) for r in m.recipients]
    lines += ["", "recipients:"]
    table = format_table(("address", "params", "status", "attempts", "next attempt",
                          "last reply"), rows, align="<<<>")
    lines += ["  " + line for line in table.splitlines()]
    lines += ["", "headers:"]
    lines += ["  " + printable(line) for line in m.headers.splitlines()]
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    detail = _reader(args).show(args.queue_id)
    if detail is None:
        raise UsageError(f"no message with queue id {args.queue_id[:40]!r} "
                         "(see `mailrelay queue list`)")
    print(to_json(dataclasses.asdict(detail)) if args.json else _show_text(detail))
    return 0
