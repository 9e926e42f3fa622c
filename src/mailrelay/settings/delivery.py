"""`[delivery]` with its `routes` and `tls_policy` tables: how queued mail leaves this node."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from mailrelay.core.domains import bare_domain
from mailrelay.settings.convert import ConfigError, build
from mailrelay.settings.cpus import usable_cpus

TLSPolicy = Literal["none", "may", "encrypt", "verify"]


@dataclass(frozen=True, slots=True)
class Route:
    """`[delivery.routes."DOMAIN"]`: send mail for DOMAIN (or `*`) to a smarthost, not its MX."""

    domain: str
    host: str
    port: int = 25
    username: str = ""
    password: str = field(default="", repr=False)
    tls: TLSPolicy = "may"


MAX_DEFAULT_PROCESSES = 4  # SQLite has one writer at a time; more workers mostly queue for it


def default_processes() -> int:
    """`delivery.processes` when not configured: one worker per CPU this process may use."""
    return max(1, min(usable_cpus(), MAX_DEFAULT_PROCESSES))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    enabled: bool = True  # run delivery workers on this node
    processes: int = field(default_factory=default_processes)  # 0: inside the SMTP process
    max_connections: int = 100
    max_per_domain: int = 20  # Postfix default_destination_concurrency_limit
    retry_first: float = 300.0  # Postfix minimal_backoff_time
    retry_max: float = 4000.0  # Postfix maximal_backoff_time
    max_lifetime: float = 432_000.0  # 5 days, Postfix maximal_queue_lifetime
    delay_warning: float = 0.0  # send a "delayed" DSN after this many seconds; 0: never
    lease_seconds: float = 900.0
    heartbeat_seconds: float = 5.0  # each delivering process writes its heartbeat this often
    dead_after: float = 30.0  # a heartbeat unchanged this long proves its process dead
    poll_seconds: float = 1.0  # look for due recipients this often without being woken
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    connection_reuse_seconds: float = 5.0
    mx_port: int = 25  # for tests only
    source_address: str = ""
    allow_private_destinations: bool = False
    tls: TLSPolicy = "may"
    tls_policy: tuple[tuple[str, TLSPolicy], ...] = ()  # per domain, from [delivery.tls_policy]
    routes: tuple[Route, ...] = ()  # from [delivery.routes."DOMAIN"]


# The keys of [delivery] that are tables, built here rather than by `build`.
TABLE_KEYS = ("routes", "tls_policy")


def build_delivery_tables(tables: dict[str, Any], source: str) -> dict[str, Any]:
    """`routes` and `tls_policy`, from the tables of [delivery] (either may be absent)."""
    return {"routes": _build_routes(tables.get("routes", {}), source),
            "tls_policy": _build_tls_policy(tables.get("tls_policy", {}), source)}


def _build_routes(raw: Any, source: str) -> tuple[Route, ...]:
    if not isinstance(raw, dict):
        raise ConfigError(source, "delivery.routes", 'expected tables, e.g. [delivery.routes."example.com"]')
    routes: list[Route] = []
    for domain, table in raw.items():
        key = f'delivery.routes."{domain}"'
        if not isinstance(table, dict):
            raise ConfigError(source, key, 'expected a table with host = "smtp.example.net", port = 587, ...')
        if "host" not in table:
            raise ConfigError(source, f"{key}.host", 'required, e.g. host = "smtp.example.net"')
        name = bare_domain(domain)
        if any(r.domain == name for r in routes):
            raise ConfigError(source, key, f'a second route for "{name}" (domains are case-insensitive)')
        route = build(Route, table, source, key, {}, "", extra={"domain": name})
        if not route.host.strip():
            raise ConfigError(source, f"{key}.host", 'expected a host name or IP, e.g. host = "smtp.example.net"')
        if not 0 < route.port <= 65535:
            raise ConfigError(source, f"{key}.port", f"expected a port number 1-65535, got {route.port}")
        routes.append(route)
    return tuple(routes)


def _build_tls_policy(raw: Any, source: str) -> tuple[tuple[str, TLSPolicy], ...]:
    if not isinstance(raw, dict):
        raise ConfigError(source, "delivery.tls_policy", 'expected a table, e.g. "example.com" = "verify"')
    out = []
    for domain, policy in raw.items():
        if policy not in typing.get_args(TLSPolicy):
            raise ConfigError(source, f'delivery.tls_policy."{domain}"',
                              f'expected one of "none", "may", "encrypt", "verify", got {policy!r}')
        out.append((bare_domain(domain), policy))
    return tuple(out)
