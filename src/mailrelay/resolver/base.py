"""What mailrelay asks of DNS, and the answers it understands: the interfaces callers are given.

`Resolver` is asked from the event loop (delivery, receiving, DKIM and DMARC need only its
`TXTResolver` part); `BlockingResolver` from a worker thread, by a library that cannot await
(pyspf). `resolver.dnspython` implements both; tests may give their own.

Exceptions: `DNSTemporaryError` (timeout, SERVFAIL, no server answered): callers defer, never
bounce, on it. A name that does not exist is an answer (`MXAnswer.kind == "nxdomain"`, or an
empty list), not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias


class DNSTemporaryError(Exception):
    """The question could not be answered now; ask again later."""


@dataclass(frozen=True, slots=True)
class MXAnswer:
    """An MX lookup: `mx` with hosts (preference, name); `null` for RFC 7505 `0 .`;
    `none` when the domain exists but has no MX (use its A/AAAA, RFC 5321 §5.1);
    `nxdomain` when the domain does not exist."""

    kind: Literal["mx", "null", "none", "nxdomain"]
    hosts: tuple[tuple[int, str], ...] = ()


class TXTResolver(Protocol):
    """The one DNS question DKIM and DMARC ask."""

    async def txt(self, name: str) -> list[str]:
        """TXT records of `name`, each one's strings joined; [] when none or it does not exist."""


class Resolver(TXTResolver, Protocol):
    async def mx(self, domain: str) -> MXAnswer:
        """MX records of `domain` (names lower-case, without the trailing dot)."""

    async def addresses(self, host: str) -> list[str]:
        """A and AAAA addresses of `host` as strings; [] when it has none or does not exist."""


# One record as BlockingResolver gives it: an address or a PTR name (text), an MX record
# (preference, host), or a TXT record's strings as they came (bytes, not joined).
Record: TypeAlias = str | tuple[int, str] | list[bytes]


class BlockingResolver(Protocol):
    """DNS for a library that asks from a worker thread and blocks (pyspf)."""

    @property
    def timeout(self) -> float:
        """The longest one question may take, in seconds."""

    def query(self, name: str, qtype: str, timeout: float) -> list[Record]:
        """The `qtype` ("A", "AAAA", "MX", "PTR", "TXT" or "SPF") records at `name`, within
        `timeout` seconds (at most `self.timeout`), CNAMEs followed; names without the trailing
        dot. [] when `name` or the data does not exist, or `name` cannot be one (a CNAME loop
        too: it never resolves); DNSTemporaryError when no answer came."""
