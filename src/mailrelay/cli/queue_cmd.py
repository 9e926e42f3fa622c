"""`mailrelay queue list | summary | show | retry | delete | bounce`: the spool, for the operator.

`list`, `summary` and `show` only read; `retry`, `delete` and `bounce` (postqueue -f, postsuper -d, and a
bounce-now) each run in one transaction, safe beside a running server on the same database.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from mailrelay.cli.common import UsageError, open_from_args, row_limit
from mailrelay.cli.output import (
    format_size,
    format_table,
    format_time,
    printable,
    to_json,
)
from mailrelay.core.dates import format_age
from mailrelay.core.status import OUTBOUND, PENDING
from mailrelay.delivery import operator
from mailrelay.spool.batches import HOLD
from mailrelay.spool.reader import MessageDetail, QueueEntry, QueueReader, why_waiting


def add_arguments(queue: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay queue` (its parser made by cli/main.py)."""
    q = queue.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    p = q.add_parser("list", help="list messages, newest first")
    p.add_argument("--limit", type=row_limit, default=100, metavar="N",
                   help="show at most N messages (default 100)")
    p.add_argument("--status", choices=OUTBOUND, metavar="STATUS",
                   help="only messages with a recipient in STATUS: " + ", ".join(OUTBOUND))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = q.add_parser("summary", help="waiting (queued and deferred) recipients per destination domain, most first")
    p.add_argument("--limit", type=row_limit, default=100, metavar="N",
                   help="show at most N domains (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)

    p = q.add_parser("show", help="show one message: envelope, recipients, headers, attempts, events")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    p = q.add_parser("retry", help="make queued and deferred recipients due now (postqueue -f)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("queue_id", metavar="ID", nargs="?", help="one message")
    which.add_argument("--all", action="store_true", help="every message in the queue")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_retry)

    p = q.add_parser("delete", help="remove messages from the queue, undelivered (postsuper -d)")
    p.add_argument("queue_ids", metavar="ID", nargs="+")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_delete)

    p = q.add_parser("bounce", help="give up on a message's pending recipients; the sender gets a DSN")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bounce)


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
    entries = reader.list(limit=args.limit, status=args.status)
    if args.json:
        print(to_json([dataclasses.asdict(e) for e in entries]))
        return 0
    if not entries:
        print(f"no {args.status} messages" if args.status else "queue is empty")
        return 0
    now = time.time()
    rows = [(e.id, e.account, e.mail_from or "<>", _recipients_cell(e), format_size(e.size),
             e.status, format_age(now - e.created_at)) for e in entries]
    print(format_table(("id", "account", "from", "recipients", "size", "status", "age"), rows,
                       align="<<<<><>"))
    total = reader.count(status=args.status)
    if total > len(entries):
        print(f"({len(entries)} of {total} messages shown; use --limit)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    found = _reader(args).by_domain(limit=args.limit)
    if args.json:
        print(to_json([dataclasses.asdict(d) for d in found]))
        return 0
    if not found:
        print("nothing is waiting")
        return 0
    now = time.time()
    rows = [(d.domain, d.queued, d.deferred, format_age(now - d.oldest_at),
             _next(d.next_attempt_at, now)) for d in found]
    print(format_table(("domain", "queued", "deferred", "oldest", "next attempt"), rows, align="<>>><"))
    return 0


def _next(at: float | None, now: float) -> str:
    if at is None or at <= now:
        return "now"
    return "held (paused batch)" if at >= HOLD else f"in {format_age(at - now)}"


def _params(params: dict[str, Any]) -> str:
    return " ".join(k if v is None else f"{k}={v}" for k, v in params.items())


def _show_text(m: MessageDetail) -> str:
    now = time.time()
    age = format_age(now - m.created_at)
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
             "held" if (r.next_attempt_at or 0) >= HOLD else format_time(r.next_attempt_at), r.last_reply)
            for r in m.recipients]
    lines += ["", "recipients:"]
    table = format_table(("address", "params", "status", "attempts", "next attempt",
                          "last reply"), rows, align="<<<>")
    lines += ["  " + line for line in table.splitlines()]
    pending = [r for r in m.recipients if r.status in PENDING]
    if pending:
        lines += ["", "waiting:"]
        lines += [f"  {printable(r.address)}: {printable(why_waiting(r, now))}" for r in pending]
    lines += ["", "headers:"]
    lines += ["  " + printable(line) for line in m.headers.splitlines()]
    lines += ["", "attempts:"]
    if m.attempts:
        tried = [(format_time(a.at), a.recipient, a.outcome, a.mx_host, a.ip, a.tls, a.reply)
                 for a in m.attempts]
        table = format_table(("time", "recipient", "outcome", "host", "ip", "tls", "reply"), tried)
        lines += ["  " + line for line in table.splitlines()]
    else:
        lines += ["  none yet"]
    lines += ["", "events:"]
    lines += [f"  {format_time(e.at)}  {e.type}" + (f"  {e.recipient}" if e.recipient else "")
              + (f"  {e.detail}" if e.detail else "") for e in m.events] or ["  none"]
    return "\n".join(printable(line) for line in lines)


def cmd_show(args: argparse.Namespace) -> int:
    detail = _reader(args).show(args.queue_id)
    if detail is None:
        raise UsageError(f"no message with queue id {args.queue_id[:40]!r} "
                         "(see `mailrelay queue list`)")
    print(to_json(dataclasses.asdict(detail)) if args.json else _show_text(detail))
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_retry(args: argparse.Namespace) -> int:
    _, engine = open_from_args(args)
    now = time.time()
    try:
        with engine.begin() as conn:
            n = operator.retry(conn, None if args.all else args.queue_id, now=now)
    except operator.NoSuchMessage as exc:
        raise UsageError(str(exc)) from None
    target = "queue" if args.all else args.queue_id
    if args.json:
        print(to_json({"id": None if args.all else args.queue_id, "recipients": n}))
    elif n:
        print(f"{target}: {_plural(n, 'recipient')} due now")
    else:
        print(f"{target}: nothing to retry (no queued or deferred recipients)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _, engine = open_from_args(args)
    now = time.time()
    ids = list(dict.fromkeys(args.queue_ids))
    # All or nothing: a mistyped id deletes none of the others either.
    try:
        with engine.begin() as conn:
            done = [(qid, operator.delete(conn, qid, now=now)) for qid in ids]
    except operator.NoSuchMessage as exc:
        raise UsageError(f"{exc}; nothing deleted") from None
    if args.json:
        print(to_json([{"id": qid, "recipients": n} for qid, n in done]))
    for qid, n in [] if args.json else done:
        print(f"{qid}: deleted, with {_plural(n, 'recipient')}")
    return 0


def cmd_bounce(args: argparse.Namespace) -> int:
    settings, engine = open_from_args(args)
    try:
        done = operator.bounce_message(engine, args.queue_id, now=time.time(), hostname=settings.server.hostname)
    except operator.NoSuchMessage as exc:
        raise UsageError(str(exc)) from None
    n, dsn, busy = done.recipients, done.dsn, done.in_delivery
    if args.json:
        print(to_json(dataclasses.asdict(done)))
        return 0
    line = f"{args.queue_id}: {_plural(n, 'recipient')} bounced"
    if n:
        line += f", DSN {dsn} queued to the sender" if dsn else ", no DSN (null sender or NOTIFY)"
    if busy:
        line += f"; {busy} being delivered now, left alone (run again when done)"
    print(printable(line))
    return 0
