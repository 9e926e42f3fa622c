"""`[smtp]`, `[auth]`, `[submission]` and `[listener.NAME]`: what the SMTP server accepts, where."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mailrelay.settings.convert import ENV_PREFIX, ConfigError, IPNetwork, build, named_tables


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    max_message_size: int = 31_457_280  # 30 MiB, SendGrid's limit
    max_recipients: int = 1000
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: at least 5 minutes
    # The idle timeout restarts at every byte; these bound a whole command line (first byte to
    # LF) and a whole DATA phase (354 to CRLF.CRLF), so a trickling client cannot hold a slot
    # forever. 300 s per line is Exim's smtp_receive_timeout and Postfix's smtpd_timeout under
    # smtpd_per_request_deadline, and still honours RFC 5321 §4.5.3.2.7's five minutes.
    command_deadline: float = 300.0
    # DATA gets data_deadline plus one second per min_data_rate bytes received (Postfix's
    # smtpd_min_data_rate, 500 B/s), counted up to max_message_size: any client faster than
    # that finishes a message within the limit; a trickler is cut off after about data_deadline.
    data_deadline: float = 600.0
    min_data_rate: int = 500
    max_connections: int = 20_000
    max_connections_per_ip: int = 50  # Postfix smtpd_client_connection_count_limit
    bare_newline: Literal["reject", "normalize"] = "reject"
    banner: str = "ESMTP mailrelay"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    allow_plaintext: bool = False
    slowdown_after: int = 3  # failed logins per address before replies slow down
    lockout_after: int = 10  # failed logins per address before it is refused
    lockout_seconds: float = 300.0
    failure_window: float = 900.0  # failures older than this are forgotten


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    trusted_networks: tuple[IPNetwork, ...] = ()
    trusted_account: str = ""
    require_own_domain: bool = True  # From: must be one of the sending account's domains


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    name: str
    listen: tuple[str, ...]
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    require_auth: bool = False
    require_tls: bool = False
    allow_plaintext_auth: bool | None = None  # None: [auth] allow_plaintext
    trusted_networks: tuple[IPNetwork, ...] | None = None  # None: [submission] trusted_networks
    enabled: bool = True


DEFAULT_LISTENERS: dict[str, dict[str, Any]] = {
    "smtp": {"listen": ["0.0.0.0:25"], "tls": "starttls"},
    "submission": {"listen": ["0.0.0.0:587"], "tls": "starttls", "require_auth": True},
    "submissions": {"listen": ["0.0.0.0:465"], "tls": "implicit", "require_auth": True},
    "alt": {"listen": ["0.0.0.0:2525"], "tls": "starttls"},
}


def parse_listen(addr: str) -> tuple[str, int]:
    """'0.0.0.0:25' / '[::1]:587' / ':2525' → (host, port)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'expected "HOST:PORT" such as "0.0.0.0:587", got {addr!r}')
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"expected an IP address (or localhost) before the port, got {host!r}") from None
    return host, int(port_text)


def build_listeners(raw: Mapping[str, Any], source: str, env: Mapping[str, str],
                    ) -> tuple[ListenerSettings, ...]:
    """The built-in listeners, changed by `[listener.NAME]`, then the new ones in file order."""
    out = []
    for name, user in named_tables(DEFAULT_LISTENERS, raw, source, "listener"):
        defaults = DEFAULT_LISTENERS.get(name, {})
        env_prefix = f"{ENV_PREFIX}LISTENER_{name}"
        if "listen" not in user and "listen" not in defaults and f"{env_prefix}_LISTEN".upper() not in env:
            raise ConfigError(source, f"listener.{name}.listen",
                              'required for a new listener, e.g. listen = ["0.0.0.0:2526"]')
        listener = build(ListenerSettings, user, source, f"listener.{name}", env, env_prefix,
                         extra={"name": name}, defaults=defaults)
        for addr in listener.listen:
            try:
                parse_listen(addr)
            except ValueError as exc:
                raise ConfigError(source, f"listener.{name}.listen", str(exc)) from None
        out.append(listener)
    return tuple(out)
