"""`mailrelay account webhook`: an account's event webhook."""

from __future__ import annotations

from typing import Any


def add_account_arguments(acc: Any) -> None:
    """Add this module's subcommands to `mailrelay account`."""
