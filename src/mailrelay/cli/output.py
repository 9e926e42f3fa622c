"""Plain-text output for the CLI: aligned tables, ages, sizes and timestamps."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
                 align: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing spaces.

    `align` has one character per column, "<" (left, the default) or ">" (right, for numbers).
    """
    cells = [[str(h).upper() for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            right = i < len(align) and align[i] == ">"
            parts.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# C0 controls except TAB and LF, DEL, and C1 controls (some terminals act on those too).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Escape control characters, so stored client data cannot drive the admin's terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    # One line per row: a stray newline in a label must not break the table.
    return printable(str(value).replace("\n", " ").replace("\t", " "))


def format_size(n: int) -> str:
    """Bytes in the units `ls -h` uses: 512 → "512", 1536 → "1.5K", 3145728 → "3.0M"."""
    value = float(n)
    for unit in ("", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_time(epoch: float | None) -> str:
    """UTC, minute precision: "2025-01-31 14:05"; None → "-"."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)
