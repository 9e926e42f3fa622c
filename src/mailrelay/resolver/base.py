"""What mailrelay asks of DNS, and the answers it understands.

Exceptions: `DNSTemporaryError` (timeout, SERVFAIL, no server answered): callers defer, never
bounce, on it. A name that does not exist is an answer (`MXAnswer.kind == "nxdomain"`, or an
empty list), not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class DNSTemporaryError(Exception):
    """The question could not be answered now; ask again later."""


@dataclass(frozen=True, slots=True)
class MXAnswer:
    """An MX lookup: `mx` with hosts (preference, name); `null` for RFC 7505 `0 .`;
    `none` when the domain exists but has no MX (use its A/AAAA, RFC 5321 §5.1);
    `nxdomain` when the domain does not exist."""

    kind: Literal["mx", "null", "none", "nxdomain"]
    hosts: tuple[tuple[int, str], ...] = ()


class Resolver(Protocol):
    async def mx(self, domain: str) -> MXAnswer:
        """MX records of `domain` (names lower-case, without the trailing dot)."""

    async def addresses(self, host: str) -> list[str]:
        """A and AAAA addresses of `host` as strings; [] when it has none or does not exist."""

    async def txt(self, name: str) -> list[str]:
        """TXT records of `name`, each one's strings joined; [] when none or it does not exist."""
