"""When a waiting recipient is tried again, and when it has waited too long.

One rule for every queue that retries: outbound delivery, the event webhook and the parse
webhook each pass their own numbers from settings.
"""

from __future__ import annotations


def backoff(attempts_before: int, *, first: float, cap: float) -> float:
    """Seconds until the attempt after `attempts_before` failed ones: first, 2*first, ... up to cap."""
    return float(min(first * (2 ** min(attempts_before, 30)), cap))


def expired(created_at: float, now: float, max_lifetime: float) -> bool:
    """A message this old is given up on at its next failure (Postfix maximal_queue_lifetime)."""
    return now - created_at >= max_lifetime


def warn_delay(created_at: float, now: float, delay_warning: float) -> bool:
    """A message this old that is still deferred earns its sender a "delayed" DSN (once per
    recipient; the caller checks that); 0 turns the warning off (Postfix delay_warning_time)."""
    return delay_warning > 0 and now - created_at >= delay_warning
