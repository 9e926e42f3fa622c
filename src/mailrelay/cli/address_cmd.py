"""`mailrelay address add | remove | list`: the known recipients of inbound domains.

Port 25 accepts mail for these addresses (and for any address at a catch-all domain); other
addresses at an inbound domain are refused with 550 5.1.1. Changes reach running servers
within a few seconds (their lookup cache, inbound.directory).
"""

from __future__ import annotations

import argparse
from typing import Any

from mailrelay.accounts.addresses import AddressService, InboundAddress
from mailrelay.accounts.domains import DomainService
from mailrelay.cli.common import open_from_args
from mailrelay.cli.output import format_table, format_time, to_json
from mailrelay.core.domains import split_address


def add_arguments(address: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay address` (its parser made by cli/main.py)."""
    a = address.add_subparsers(dest="address_command", metavar="COMMAND", required=True)

    p = a.add_parser("add", help="accept mail for an address (its domain must be added)")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_add)

    p = a.add_parser("remove", help="stop accepting mail for an address")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_remove)

    p = a.add_parser("list", help="list known addresses")
    p.add_argument("--domain", metavar="DOMAIN", default=None, help="only this domain's")
    p.add_argument("--account", metavar="NAME", default=None, help="only this account's")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)


def _service(args: argparse.Namespace) -> AddressService:
    _, engine = open_from_args(args)
    return AddressService(engine)


def _json(a: InboundAddress) -> dict[str, Any]:
    return {"address": a.address, "domain": a.domain, "account": a.account_name,
            "created_at": a.created_at}


def cmd_add(args: argparse.Namespace) -> int:
    split_address(args.address)  # a bad address is reported before the database is opened
    _, engine = open_from_args(args)
    added = AddressService(engine).add(args.address)
    print(f"added address {added.address} (account {added.account_name})")
    domain = DomainService(engine).require(added.domain)
    if not domain.inbound:
        print(f"note: {domain.name} does not receive mail yet; turn it on with "
              f"`mailrelay domain inbound {domain.name}`")
    elif domain.catch_all:
        print(f"note: {domain.name} is catch-all: every address there is accepted anyway")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    split_address(args.address)
    removed = _service(args).remove(args.address)
    print(f"removed address {removed.address} (account {removed.account_name})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = _service(args).list(domain=args.domain, account=args.account)
    if args.json:
        print(to_json([_json(a) for a in found]))
    elif not found:
        print("no addresses; add one with `mailrelay address add user@example.com`")
    else:
        print(format_table(("address", "account", "added"),
                          [(a.address, a.account_name, format_time(a.created_at)) for a in found]))
    return 0
