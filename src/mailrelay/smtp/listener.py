"""What every session of a listener shares: the endpoint's settings and the engine's limits.

Below both the server (which binds listeners) and the session (which obeys them), so neither
imports the other to learn them.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Literal

from mailrelay.smtp.handler import Handler

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_message_size: int = 31_457_280
    max_recipients: int = 1000
    idle_timeout: float = 300.0
    command_deadline: float = 300.0  # seconds for one command line, first byte to LF
    data_deadline: float = 600.0  # seconds for DATA, 354 to CRLF.CRLF, plus the rate allowance
    min_data_rate: int = 500  # bytes/s: each this many bytes of DATA add one second (0: none)
    max_connections: int = 20_000
    max_connections_per_ip: int = 50
    bare_newline: Literal["reject", "normalize"] = "reject"


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening endpoint and its overrides (as a master.cf line in Postfix)."""

    name: str
    addresses: tuple[tuple[str, int], ...]
    handler: Handler
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ssl_context: ssl.SSLContext | None = None
    require_auth: bool = False
    require_tls: bool = False
    allow_plaintext_auth: bool = False
    trusted_networks: tuple[Network, ...] = field(default_factory=tuple)

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted_networks:
            return False
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted_networks)
