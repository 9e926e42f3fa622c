"""`mailrelay domain ...` (placeholder; filled in by the domains work)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(sub: Any) -> None:
    _ = (sub, argparse)
