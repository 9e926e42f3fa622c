"""Per-minute sending rate, per account and per node: a token bucket in memory.

Each node (process) keeps its own buckets, so N nodes let an account send up to N times
`rate_per_minute`; the daily and monthly limits are the ones counted exactly in the database.
"""

from __future__ import annotations

MAX_BUCKETS = 100_000  # past this, full buckets are forgotten (they hold nothing to remember)


class RateLimiter:
    """Up to `rate` emails a minute per key, in bursts of at most `rate`."""

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: int, rate: int, now: float) -> float:
        """Take one email from the bucket: 0.0 if allowed, else seconds until one is free."""
        tokens, at = self._buckets.get(key, (float(rate), now))
        tokens = min(float(rate), tokens + max(0.0, now - at) * rate / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * 60.0 / rate
        if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def give_back(self, key: int) -> None:
        """Undo a `take` whose email was refused for another reason."""
        if key in self._buckets:
            tokens, at = self._buckets[key]
            self._buckets[key] = (tokens + 1.0, at)

    def _forget_full(self, now: float) -> None:
        # A bucket left alone for a minute has refilled: forgetting it changes nothing.
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}
