"""`mailrelay inbox ...`: mail captured by sandbox accounts."""

from __future__ import annotations

from typing import Any


def add_arguments(sub: Any) -> None:
    """Add this module's command to `mailrelay`."""
