"""`mailrelay account usage|plan`: plans and what an account has used."""

from __future__ import annotations

from typing import Any


def add_account_arguments(acc: Any) -> None:
    """Add this module's subcommands to `mailrelay account`."""
