from __future__ import annotations

import errno

from mailrelay.smtp.limits import AuthFailureLimiter, ConnectionCounter, client_key
from mailrelay.smtp.server import BindFailure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_slow_down_then_lock_and_expire() -> None:
    clock = Clock()
    lim = AuthFailureLimiter(slowdown_after=2, lockout_after=4, lockout_seconds=60, window=300, clock=clock)
    assert [lim.record_failure("192.0.2.1") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert not lim.locked("192.0.2.1")
    assert lim.record_failure("192.0.2.1") == 2.0
    assert lim.locked("192.0.2.1")
    assert not lim.locked("192.0.2.2"), "other addresses are not affected"
    clock.now += 61
    assert not lim.locked("192.0.2.1")
    assert lim.record_failure("192.0.2.1") == 0.0, "the count starts again after a lockout"


def test_old_failures_are_forgotten() -> None:
    clock = Clock()
    lim = AuthFailureLimiter(slowdown_after=1, lockout_after=3, lockout_seconds=60, window=10, clock=clock)
    lim.record_failure("a")
    clock.now += 11
    assert lim.record_failure("a") == 0.0
    assert lim.record_failure("a") == 1.0
    clock.now += 11
    lim.prune()
    assert lim.record_failure("a") == 0.0


def test_client_key_groups_ipv6_by_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"


def test_connection_counter() -> None:
    c = ConnectionCounter()
    assert [c.add("a"), c.add("a"), c.add("b")] == [1, 2, 1]
    c.remove("a")
    assert (c.total, c.count("a"), c.count("b")) == (2, 1, 1)
    c.remove("a")
    assert c.count("a") == 0


def test_bind_failure_advice_names_the_fixes() -> None:
    denied = BindFailure("smtp", "0.0.0.0", 25, PermissionError(errno.EACCES, "Permission denied"))
    text = denied.advice()
    assert "run as root" in text and "setcap cap_net_bind_service" in text and "listener.smtp.listen" in text
    busy = BindFailure("alt", "0.0.0.0", 2525, OSError(errno.EADDRINUSE, "Address in use"))
    assert "already in use" in busy.advice()
