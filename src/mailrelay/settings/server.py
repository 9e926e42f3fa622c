"""`[server]`, `[tls]` and `[dns]`: the node's name, data folder, certificate and resolver."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str = field(default_factory=socket.gethostname)
    data_dir: str = "data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (mailrelay.logs)
    shutdown_timeout: float = 30.0
    demo_account: bool = True


@dataclass(frozen=True, slots=True)
class TLSSettings:
    cert_file: str = ""  # empty: a self-signed certificate in <data_dir>/tls/
    key_file: str = ""
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@dataclass(frozen=True, slots=True)
class DNSSettings:
    nameservers: tuple[str, ...] = ()  # "IP" or "IP:PORT"; empty: the system resolver
    timeout: float = 5.0
