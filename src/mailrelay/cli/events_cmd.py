"""`mailrelay events`: what happened to mail, newest last; `--follow` keeps watching."""

from __future__ import annotations

from typing import Any


def add_arguments(sub: Any) -> None:
    """Add this module's command to `mailrelay`."""
