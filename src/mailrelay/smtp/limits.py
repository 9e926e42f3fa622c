"""Per-address counters: open connections and failed logins.

Security: failed logins are counted per client address across connections (not per session),
so reconnecting does not reset the count, and a successful login does not reset it (one good
login to an attacker's own account must not buy guesses at others'). State is per process;
each node of a cluster keeps its own.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable


def client_key(ip: str) -> str:
    """What per-client limits count by: an IPv4 address, or an IPv6 /64 (one host usually has
    a whole /64 and could rotate through it). IPv4-mapped IPv6 counts as the IPv4 address."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((addr, 64), strict=False).network_address) + "/64"


class ConnectionCounter:
    """Open connections, in total and per client address."""

    __slots__ = ("_per_ip", "total")

    def __init__(self) -> None:
        self.total = 0
        self._per_ip: dict[str, int] = {}

    def add(self, ip: str) -> int:
        self.total += 1
        n = self._per_ip.get(ip, 0) + 1
        self._per_ip[ip] = n
        return n

    def remove(self, ip: str) -> None:
        self.total -= 1
        n = self._per_ip.get(ip, 0) - 1
        if n > 0:
            self._per_ip[ip] = n
        else:
            self._per_ip.pop(ip, None)

    def count(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)


class AuthFailureLimiter:
    """Failed logins per address: a growing delay after `slowdown_after`, refusal after `lockout_after`."""

    def __init__(self, *, slowdown_after: int, lockout_after: int, lockout_seconds: float,
                 window: float, clock: Callable[[], float] = time.monotonic,
                 max_delay: float = 5.0) -> None:
        self.slowdown_after = slowdown_after
        self.lockout_after = lockout_after
        self.lockout_seconds = lockout_seconds
        self.window = window
        self.max_delay = max_delay
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def _recent(self, ip: str) -> deque[float]:
        now = self._clock()
        q = self._failures.get(ip)
        if q is None:
            return deque()
        while q and q[0] < now - self.window:
            q.popleft()
        if not q:
            del self._failures[ip]
        return q

    def locked(self, ip: str) -> bool:
        until = self._locked_until.get(ip)
        if until is None:
            return False
        if until <= self._clock():
            del self._locked_until[ip]
            self._failures.pop(ip, None)
            return False
        return True

    def record_failure(self, ip: str) -> float:
        """Count one failure; return how long to wait before answering (0 for none)."""
        now = self._clock()
        q = self._recent(ip)
        if ip not in self._failures:
            self._failures[ip] = q
        q.append(now)
        n = len(q)
        if n >= self.lockout_after:
            self._locked_until[ip] = now + self.lockout_seconds
        if n > self.slowdown_after:
            return min(float(n - self.slowdown_after), self.max_delay)
        return 0.0


    def prune(self) -> None:
        """Forget stale entries so the tables cannot grow without bound."""
        now = self._clock()
        for ip in [ip for ip, t in self._locked_until.items() if t <= now]:
            del self._locked_until[ip]
        for ip in list(self._failures):
            self._recent(ip)
