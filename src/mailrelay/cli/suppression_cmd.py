"""`mailrelay suppression ...` (placeholder; filled in by the suppressions work)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(sub: Any) -> None:
    _ = (sub, argparse)
