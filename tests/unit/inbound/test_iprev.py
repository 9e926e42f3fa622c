"""iprev (RFC 8601 §3) over a scripted resolver: pass, fail, permerror, temperror."""

from __future__ import annotations

import asyncio

import pytest

from mailrelay.inbound.receive import IPRev, check_iprev
from mailrelay.resolver.base import DNSTemporaryError


class Resolver:
    def __init__(self, ptr: dict[str, list[str] | Exception], a: dict[str, list[str] | Exception],
                 delay: float = 0.0) -> None:
        self._ptr, self._a, self._delay = ptr, a, delay

    async def ptr(self, ip: str) -> list[str]:
        await asyncio.sleep(self._delay)
        return _answer(self._ptr.get(ip, []))

    async def addresses(self, host: str) -> list[str]:
        return _answer(self._a.get(host, []))

    async def txt(self, name: str) -> list[str]:
        return []


def _answer(value: list[str] | Exception) -> list[str]:
    if isinstance(value, Exception):
        raise value
    return value


@pytest.mark.parametrize(("ptr", "a", "expected"), [
    ({"192.0.2.1": ["bad.test", "mx.test"]}, {"mx.test": ["192.0.2.1"]}, IPRev("pass", "192.0.2.1", "mx.test")),
    ({"192.0.2.1": ["mx.test"]}, {"mx.test": ["192.0.2.9"]}, IPRev("fail", "192.0.2.1", "mx.test")),
    ({}, {}, IPRev("permerror", "192.0.2.1")),
    ({"192.0.2.1": DNSTemporaryError("x")}, {}, IPRev("temperror", "192.0.2.1")),
    ({"192.0.2.1": ["mx.test"]}, {"mx.test": DNSTemporaryError("x")}, IPRev("temperror", "192.0.2.1", "mx.test")),
])
def test_iprev(ptr: dict[str, list[str] | Exception], a: dict[str, list[str] | Exception],
               expected: IPRev) -> None:
    assert asyncio.run(check_iprev("192.0.2.1", Resolver(ptr, a), timeout=1.0)) == expected


def test_ipv4_mapped_address_and_timeout() -> None:
    resolver = Resolver({"192.0.2.1": ["mx.test"]}, {"mx.test": ["192.0.2.1"]})
    assert asyncio.run(check_iprev("::ffff:192.0.2.1", resolver, timeout=1.0)).result == "pass"
    slow = Resolver({"192.0.2.1": ["mx.test"]}, {}, delay=5.0)
    assert asyncio.run(check_iprev("192.0.2.1", slow, timeout=0.05)) == IPRev("temperror", "192.0.2.1")
    assert asyncio.run(check_iprev("not-an-ip", slow, timeout=0.05)).result == "permerror"
