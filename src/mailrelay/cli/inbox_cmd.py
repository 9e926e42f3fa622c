"""`mailrelay inbox list | show | raw | release | clear`: mail captured by sandbox accounts
(sandbox.inbox), and mail received for the account's inbound domains (kind "in", inbound.mailbox),
shown as one inbox.

One inbox per account: with `--account A` every command sees A's mail only, and an id of another
account's message is unknown to it. `release` acts on sandbox captures only; `clear` deletes
captured and received mail, except mail still waiting for delivery or for its parse webhook.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from mailrelay.cli.common import UsageError, open_from_args, row_limit
from mailrelay.cli.output import format_size, format_table, format_time, printable, to_json
from mailrelay.inbound.mailbox import Mailbox, ReceivedMessage
from mailrelay.sandbox.inbox import CapturedMessage, Inbox, InboxEntry, NoSuchCapture, NotSandbox
from mailrelay.sandbox.summary import Summary, summarize

TEXT_LINES = 20  # of the text part, in `show`


def add_arguments(inbox: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay inbox` (its parser made by cli/main.py)."""
    i = inbox.add_subparsers(dest="inbox_command", metavar="COMMAND", required=True)

    def account_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--account", metavar="NAME", help="only this account's mail")

    p = i.add_parser("list", help="list captured and received messages, newest first (kind: sandbox or in)")
    account_option(p)
    p.add_argument("--search", metavar="TEXT",
                   help="case-insensitive, in the subject, the envelope sender and recipients, and the raw "
                        "message (header fields and body as sent; base64 or quoted-printable parts are "
                        "not decoded)")
    p.add_argument("--limit", type=row_limit, default=100, metavar="N",
                   help="show at most N messages (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = i.add_parser("show", help="one message: headers, DKIM (received: checks), text, HTML summary, attachments")
    p.add_argument("queue_id", metavar="ID")
    account_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (with the whole text part)")
    p.set_defaults(func=cmd_show)

    p = i.add_parser("raw", help="the message exactly as it would have been sent (DKIM signature included), "
                                 "or as received")
    p.add_argument("queue_id", metavar="ID")
    account_option(p)
    p.set_defaults(func=cmd_raw)

    p = i.add_parser("release", help="deliver a captured sandbox message for real (signed afresh at delivery)")
    p.add_argument("queue_id", metavar="ID")
    account_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_release)

    p = i.add_parser("clear", help="delete captured and received messages (of one account with --account); "
                                   "mail still waiting to be delivered or posted stays")
    account_option(p)
    p.add_argument("--yes", action="store_true", help="delete without asking (required to delete)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_clear)


def _boxes(args: argparse.Namespace) -> tuple[Inbox, Mailbox]:
    """The sandbox's captures and the received mail: one inbox to the user."""
    _, engine = open_from_args(args)
    return Inbox(engine), Mailbox(engine)


def _get(args: argparse.Namespace) -> CapturedMessage | ReceivedMessage:
    inbox, mailbox = _boxes(args)
    try:
        return inbox.get(args.queue_id, account=args.account)
    except NoSuchCapture:
        pass
    try:
        return mailbox.get(args.queue_id, account=args.account)
    except NoSuchCapture:
        raise UsageError(_unknown(args)) from None


def _unknown(args: argparse.Namespace) -> str:
    scope = f" of account {args.account}" if args.account else ""
    return f"no captured message {args.queue_id[:40]!r}{scope} (see `mailrelay inbox list`)"


def _to_cell(e: InboxEntry) -> str:
    if not e.recipients:
        return "-"
    return e.recipients[0] + (f" +{len(e.recipients) - 1}" if len(e.recipients) > 1 else "")


def _entry_json(e: InboxEntry) -> dict[str, Any]:
    return dataclasses.asdict(e) | {"recipients": list(e.recipients)}


def cmd_list(args: argparse.Namespace) -> int:
    inbox, mailbox = _boxes(args)
    # Each box's newest `limit` (matching), merged: the newest `limit` of both.
    entries = sorted((*inbox.list(account=args.account, search=args.search, limit=args.limit),
                      *mailbox.list(account=args.account, search=args.search, limit=args.limit)),
                     key=lambda e: (e.created_at, e.id), reverse=True)[:args.limit]
    if args.json:
        print(to_json([_entry_json(e) for e in entries]))
        return 0
    if not entries:
        scope = f" of account {args.account}" if args.account else ""
        print(f"no captured messages{scope}" + (f" matching {args.search!r}" if args.search else ""))
        return 0
    rows = [(e.id, e.kind, e.account, format_time(e.created_at), e.mail_from or "<>", _to_cell(e),
             e.subject or "-") for e in entries]
    print(format_table(("id", "kind", "account", "time", "from", "to", "subject"), rows))
    if len(entries) == args.limit:
        print(f"(first {args.limit} shown; use --limit)")
    return 0


def _dkim_line(s: Summary) -> str:
    if not s.dkim:
        return "not signed (the From: domain is not a verified sender domain of the account, or has no key)"
    return "; ".join("signed " + " ".join(f"{k}={v}" for k, v in tags.items()) for tags in s.dkim)


def _show_text(m: CapturedMessage | ReceivedMessage, s: Summary) -> str:
    e = m.entry
    fields = [
        ("id", e.id),
        ("kind", "in (received mail)" if isinstance(m, ReceivedMessage) else "sandbox (captured, not sent)"),
        ("account", e.account),
        ("received", f"{format_time(e.created_at)} UTC"),
        ("envelope", f"<{e.mail_from}> to " + ", ".join(e.recipients)),
        ("size", f"{format_size(len(m.raw))} ({len(m.raw)} bytes{' with the signature' if m.signature else ''})"),
        ("checks", m.auth or "none recorded") if isinstance(m, ReceivedMessage) else ("dkim", _dkim_line(s)),
    ]
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{(k + ':').ljust(width)} {v}" for k, v in fields]
    lines += ["", "headers:"] + [f"  {k}: {v}" for k, v in s.headers.items()]
    if s.text is None:
        lines += ["", "text: none"]
    else:
        text = s.text.splitlines()
        more = f" (first {TEXT_LINES} of {len(text)} lines)" if len(text) > TEXT_LINES else ""
        lines += ["", f"text{more}:"] + [f"  {line}" for line in text[:TEXT_LINES]]
    if s.html is None:
        lines += ["", "html: none"]
    else:
        h = s.html
        lines += ["", f"html: {format_size(h.size)} characters, {h.links} link{'s' * (h.links != 1)}, "
                      f"{h.images} image{'s' * (h.images != 1)}"]
    if s.attachments:
        table = format_table(("filename", "type", "size"),
                             [(a.filename, a.content_type, format_size(a.size)) for a in s.attachments], align="<<>")
        lines += ["", "attachments:"] + ["  " + line for line in table.splitlines()]
    else:
        lines += ["", "attachments: none"]
    if s.defects:
        lines += ["", f"note: the parser found {s.defects} malformation{'s' * (s.defects != 1)}"]
    return "\n".join(printable(line) for line in lines)


def cmd_show(args: argparse.Namespace) -> int:
    m = _get(args)
    s = summarize(m.raw)
    if args.json:
        print(to_json(_entry_json(m.entry) | {"summary": dataclasses.asdict(s)}))
    else:
        print(_show_text(m, s))
    return 0


def cmd_raw(args: argparse.Namespace) -> int:
    raw = _get(args).raw
    sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    try:
        released = _boxes(args)[0].release(args.queue_id, account=args.account, now=time.time())
    except NotSandbox as exc:
        raise UsageError(str(exc)) from None
    except NoSuchCapture:
        raise UsageError(_unknown(args)) from None
    if args.json:
        print(to_json({"id": args.queue_id, "recipients": released}))
    else:
        print(printable(f"{args.queue_id}: released to {', '.join(released)}; queued for delivery now"))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    inbox, mailbox = _boxes(args)
    scope = f"of account {args.account}" if args.account else "of every account"
    now = time.time()
    n = (inbox.clear(account=args.account, now=now, dry_run=not args.yes)
         + mailbox.clear(account=args.account, now=now, dry_run=not args.yes))
    if not args.yes and n:
        raise UsageError(f"this would delete {n} inbox message{'s' * (n != 1)} {scope}; "
                         "add --yes to delete them")
    if args.json:
        print(to_json({"account": args.account, "deleted": n}))
    else:
        print(f"deleted {n} inbox message{'s' * (n != 1)} {scope}")
    return 0
