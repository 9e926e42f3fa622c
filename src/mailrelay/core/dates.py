"""Dates as mail headers write them."""

from __future__ import annotations

import datetime
import email.utils


def rfc5322_date(when: float) -> str:
    """`Wed, 18 Nov 2026 11:06:40 +0000`: UTC with an explicit offset (-0000 means "unknown")."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(when, datetime.UTC))
