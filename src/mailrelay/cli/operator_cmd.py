"""`mailrelay operator grant | revoke | list`: the accounts that may use the dashboard's operator
pages; `mailrelay operator key create | list | revoke`: the keys of the operator's API (/admin/v1).

An operator account signs in to the dashboard as any account does (the same /login, password and
lock-out) and sees /operator besides its own pages; the flag is in the database, so it holds on
every node. An operator key belongs to no account: it cannot send mail, and an account key cannot reach
/admin/v1. Keys are kept in `<data_dir>/operator_keys.json` (mailrelay.accounts.operators), so
a key works on the node where it was created; the full key is printed once.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailrelay.accounts.operators import OperatorKey, OperatorKeys, key_path
from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.cli.common import load_config, open_from_args
from mailrelay.cli.output import format_table, format_time, to_json

SHOWN_ONCE = "Store it now: it cannot be shown again."


def add_arguments(operator: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay operator` (its parser made by cli/main.py)."""
    op = operator.add_subparsers(dest="operator_command", metavar="COMMAND", required=True)

    p = op.add_parser("grant", help="let an account use the dashboard's operator pages (/operator)")
    p.add_argument("name")
    p.set_defaults(func=cmd_grant, on=True)

    p = op.add_parser("revoke", help="take an account's operator pages away (its own pages stay)")
    p.add_argument("name")
    p.set_defaults(func=cmd_grant, on=False)

    p = op.add_parser("list", help="list the operator accounts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_operators)

    key = op.add_parser("key", help="manage operator keys (Authorization: Bearer on /admin/v1)")
    keys = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)

    p = keys.add_parser("create", help="create an operator key and print it once")
    p.add_argument("--label", default="")
    p.set_defaults(func=cmd_create)

    p = keys.add_parser("list", help="list operator keys (ids only; secrets are not stored)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = keys.add_parser("revoke", help="revoke an operator key by id")
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_revoke)


def _accounts(args: argparse.Namespace) -> AccountService:
    _, engine = open_from_args(args)
    return AccountService(engine, make_hasher())


def cmd_grant(args: argparse.Namespace) -> int:
    account = _accounts(args).set_operator(args.name, args.on)
    if args.on:
        print(f"account {account.name} is now an operator: it sees /operator after signing in to the dashboard")
    else:
        print(f"account {account.name} is no longer an operator")
    if account.status != "active":
        print(f"(the account is {account.status}: it cannot sign in until `mailrelay account enable {account.name}`)")
    return 0


def cmd_operators(args: argparse.Namespace) -> int:
    found = [a for a in _accounts(args).list() if a.operator]
    if args.json:
        print(to_json([{"name": a.name, "status": a.status} for a in found]))
    elif not found:
        print("no operator accounts; make one with `mailrelay operator grant NAME`")
    else:
        print(format_table(("name", "status"), [(a.name, a.status) for a in found]))
    return 0


def _store(args: argparse.Namespace) -> OperatorKeys:
    return OperatorKeys(key_path(load_config(args).data_dir), make_hasher())


def _json(k: OperatorKey) -> dict[str, Any]:
    return {"id": k.id, "label": k.label, "status": "active" if k.active else "revoked",
            "created_at": k.created_at, "revoked_at": k.revoked_at}


def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    key, full = store.create(args.label)
    print(f"created operator key {key.id} (in {store.path})")
    print(f"key: {full}")
    print(f"{SHOWN_ONCE} Send it as `Authorization: Bearer <key>` to /admin/v1 on this node.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = _store(args).list()
    if args.json:
        print(to_json([_json(k) for k in found]))
    elif not found:
        print("no operator keys; create one with `mailrelay operator key create`")
    else:
        rows = [(k.id, k.label or "-", "active" if k.active else "revoked", format_time(k.created_at),
                 format_time(k.revoked_at)) for k in found]
        print(format_table(("id", "label", "status", "created", "revoked"), rows))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    key = _store(args).revoke(args.key_id)
    print(f"revoked operator key {key.id}")
    return 0
