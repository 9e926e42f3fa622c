"""`mailrelay account ...`: create, list, enable/disable, passwd, and API keys.

Security: reads passwords from a TTY (no echo) or one line of stdin, never from argv, where
other local users could see them in the process list. Generated passwords and new API keys
are printed exactly once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections import Counter
from typing import Any

from mailrelay.accounts.passwords import generate_password, make_hasher
from mailrelay.accounts.service import (
    Account,
    AccountError,
    AccountService,
    ApiKey,
    validate_name,
    validate_password,
    validate_plan,
)
from mailrelay.cli import plan_cmd, sandbox_cmd, webhook_cmd
from mailrelay.cli.common import UsageError, load_config, open_from_args
from mailrelay.cli.output import format_table, format_time, to_json

SHOWN_ONCE = "Store it now: it cannot be shown again."


def add_arguments(account: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay account` (its parser made by cli/main.py)."""
    acc = account.add_subparsers(dest="account_command", metavar="COMMAND", required=True)

    p = acc.add_parser("create", help="create an account (password from TTY, stdin, or generated)")
    p.add_argument("name")
    p.add_argument("--plan", default=None,
                   help="a plan from the config, [plans.NAME] (default: [accounts] default_plan)")
    p.add_argument("--sandbox", action="store_true",
                   help="a test account: its mail is captured (see `mailrelay inbox`), never delivered")
    _password_stdin(p)
    p.set_defaults(func=cmd_create)

    p = acc.add_parser("list", help="list accounts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = acc.add_parser("disable", help="refuse logins and API keys of an account")
    p.add_argument("name")
    p.set_defaults(func=cmd_set_status, status="disabled")

    p = acc.add_parser("enable", help="allow a disabled account again")
    p.add_argument("name")
    p.set_defaults(func=cmd_set_status, status="active")

    p = acc.add_parser("passwd", help="set a new password")
    p.add_argument("name")
    _password_stdin(p)
    p.set_defaults(func=cmd_passwd)

    key = acc.add_parser("key", help="manage API keys (SMTP AUTH as user 'apikey')")
    keys = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)

    p = keys.add_parser("create", help="create an API key and print it once")
    p.add_argument("name")
    p.add_argument("--label", default="")
    p.add_argument("--scopes", metavar="SCOPE,...", default=None,
                   help="SendGrid scope names, comma-separated, e.g. mail.send,stats.read "
                        "(default: full access); SMTP logins need mail.send")
    p.set_defaults(func=cmd_key_create)

    p = keys.add_parser("list", help="list API keys (ids only; secrets are not stored)")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_key_list)

    p = keys.add_parser("revoke", help="revoke an API key by id")
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_key_revoke)

    plan_cmd.add_account_arguments(acc)  # usage, plan
    sandbox_cmd.add_account_arguments(acc)  # sandbox
    webhook_cmd.add_account_arguments(acc)  # webhook


def _password_stdin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")


def _service(args: argparse.Namespace) -> AccountService:
    _, engine = open_from_args(args)
    return AccountService(engine, make_hasher())


def read_new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): --password-stdin, else a TTY prompt, else a generated one."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: no password on the first line of standard input")
        return validate_password(password), False
    if sys.stdin.isatty():
        password = validate_password(getpass.getpass("Password: "))
        if getpass.getpass("Repeat password: ") != password:
            raise UsageError("passwords do not match; nothing changed")
        return password, False
    return generate_password(), True


def _print_generated(password: str) -> None:
    print(f"password: {password}")
    print(SHOWN_ONCE)


def cmd_create(args: argparse.Namespace) -> int:
    validate_name(args.name)  # before prompting for a password
    settings = load_config(args)
    plan = validate_plan(args.plan or settings.accounts.default_plan, (p.name for p in settings.plans))
    svc = _service(args)
    if svc.get(args.name) is not None:
        raise AccountError(f"account {args.name!r} already exists")
    password, generated = read_new_password(args)
    account = svc.create(args.name, password, plan=plan, sandbox=args.sandbox)
    print(f"created account {account.name} (plan {account.plan}{', sandbox' if account.sandbox else ''})")
    if generated:
        _print_generated(password)
    return 0


def _account_json(a: Account, keys: int) -> dict[str, Any]:
    return {"name": a.name, "plan": a.plan, "status": a.status, "keys": keys,
            "created_at": a.created_at}


def cmd_list(args: argparse.Namespace) -> int:
    svc = _service(args)
    accounts = svc.list()
    key_counts = Counter(k.account_name for k in svc.list_keys() if k.active)
    if args.json:
        print(to_json([_account_json(a, key_counts[a.name]) for a in accounts]))
    elif not accounts:
        print("no accounts; create one with `mailrelay account create NAME`")
    else:
        rows = [(a.name, a.plan, a.status, key_counts[a.name], format_time(a.created_at))
                for a in accounts]
        print(format_table(("name", "plan", "status", "keys", "created"), rows, align="<<<>"))
    return 0


def cmd_set_status(args: argparse.Namespace) -> int:
    account = _service(args).set_status(args.name, args.status)
    print(f"account {account.name} is now {account.status}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    svc = _service(args)
    if svc.get(args.name) is None:
        raise AccountError(f"no account named {args.name!r}")
    password, generated = read_new_password(args)
    svc.set_password(args.name, password)
    print(f"password changed for account {args.name}")
    if generated:
        _print_generated(password)
    return 0


def _key_json(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "account": k.account_name, "label": k.label,
            "status": "active" if k.active else "revoked", "created_at": k.created_at,
            "revoked_at": k.revoked_at, "last_used_at": k.last_used_at,
            "scopes": None if k.scopes is None else list(k.scopes)}


def _scopes_text(k: ApiKey) -> str:
    return "full access" if k.scopes is None else ",".join(k.scopes)


def _parse_scopes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UsageError("--scopes: give one or more scope names, e.g. --scopes mail.send")
    return names


def cmd_key_create(args: argparse.Namespace) -> int:
    scopes = _parse_scopes(args.scopes)
    key, full = _service(args).create_key(args.name, label=args.label, scopes=scopes)
    print(f"created API key {key.id} for account {key.account_name}")
    if scopes is not None:
        print(f"scopes: {_scopes_text(key)}")
    print(f"key: {full}")
    print(f'{SHOWN_ONCE} Use it as SMTP AUTH username "apikey" with the key as password.')
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    keys = _service(args).list_keys(args.name)
    if args.json:
        print(to_json([_key_json(k) for k in keys]))
    elif not keys:
        print("no API keys")
    else:
        rows = [(k.id, k.account_name, k.label or "-", "active" if k.active else "revoked",
                 format_time(k.created_at), format_time(k.last_used_at), _scopes_text(k))
                for k in keys]
        print(format_table(("id", "account", "label", "status", "created", "last used", "scopes"),
                           rows))
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    key = _service(args).revoke_key(args.key_id)
    print(f"revoked API key {key.id} of account {key.account_name}")
    return 0
