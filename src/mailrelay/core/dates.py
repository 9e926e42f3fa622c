"""Dates as mail headers write them, and ages as an operator reads them."""

from __future__ import annotations

import datetime
import email.utils
import functools


def rfc5322_date(when: float) -> str:
    """`Wed, 18 Nov 2026 11:06:40 +0000`: UTC with an explicit offset (-0000 means "unknown")."""
    return _second(int(when // 1))


@functools.lru_cache(maxsize=8)  # every message of a second gets the same text: made once
def _second(when: int) -> str:
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(when, datetime.UTC))


def format_age(seconds: float) -> str:
    """45 → "45s", 190 → "3m", 7300 → "2h", 200000 → "2d"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"
