"""When a waiting recipient is tried again, and when it has waited too long.

One rule for every queue that retries: outbound delivery, the event webhook and the parse
webhook each pass their own numbers from settings.
"""

from __future__ import annotations


def backoff(attempts_before: int, *, first: float, cap: float) -> float:
    """Seconds until the attempt after `attempts_before` failed ones: first, 2*first, ... up to cap."""
    return float(min(first * (2 ** min(attempts_before, 30)), cap))
