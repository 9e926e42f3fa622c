"""`[http]`: the HTTP API (SendGrid v3-compatible), served by `mailrelay serve` in a process of
its own."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailrelay.settings.convert import IPNetwork
from mailrelay.settings.cpus import usable_cpus

MAX_DEFAULT_PROCESSES = 2  # each is a Python process of about 100 MB, idle or not


def default_processes() -> int:
    """`http.processes` when not configured: one per CPU, at most two."""
    return max(1, min(usable_cpus(), MAX_DEFAULT_PROCESSES))


def default_metrics_networks() -> tuple[IPNetwork, ...]:
    return (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    enabled: bool = True
    # host:port; loopback by default: put it behind a TLS proxy, or set tls = true and listen on
    # 0.0.0.0 to serve it with the server's certificate ([tls]).
    listen: str = "127.0.0.1:8025"
    tls: bool = False
    # Bytes of one request body: SendGrid's 30 MB message limit, plus JSON and base64 overhead
    # (base64 grows attachments by a third).
    max_body: int = 42 * 1024 * 1024
    max_concurrent: int = 256  # requests in flight at once, per process; more wait in the accept queue
    # API processes sharing the port (SO_REUSEPORT, the kernel spreads connections): one Python
    # process uses one core, so two where there are two CPUs (a busy API took 1.6x the requests
    # a second with two); more when the API is busy and cores are free.
    processes: int = field(default_factory=default_processes)
    # Clients that may read /metrics without a key (the connection's own address; the others
    # get a 404): loopback by default, e.g. add the Prometheus server's address.
    metrics_networks: tuple[IPNetwork, ...] = field(default_factory=default_metrics_networks)
