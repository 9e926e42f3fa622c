"""The configuration file, parsed once into frozen, typed settings.

Sources, later ones winning: built-in defaults, the TOML file, environment variables
`MAILRELAY_<SECTION>_<KEY>` (listeners: `MAILRELAY_LISTENER_<NAME>_<KEY>`). Every mistake
raises `ConfigError` naming the file, the key and what was expected; the CLI turns it into one
line and exit code 2. `docs/configuration.md` documents every key below.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "MAILRELAY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A user mistake in the configuration: file, key, and what is expected."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        super().__init__(f"{source}: {key}: {expected}")
        self.source = source
        self.key = key
        self.expected = expected


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str = field(default_factory=socket.gethostname)
    data_dir: str = "data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: float = 30.0
    demo_account: bool = True


@dataclass(frozen=True, slots=True)
class TLSSettings:
    cert_file: str = ""  # empty: a self-signed certificate in <data_dir>/tls/
    key_file: str = ""
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    url: str = ""  # empty: sqlite:///<data_dir>/mailrelay.db
    group_commit_max: int = 512
    # MAIL is answered 452 4.3.1 when the SQLite database's file system has less than this
    # many bytes free, plus the SIZE= declared (Postfix's queue_minfree). 64 MiB: twice the
    # default 30 MiB smtp.max_message_size (Postfix asks for at least 1.5 times; a message
    # sits in SQLite's WAL and then in the database file, and outcomes still need room).
    min_free: int = 67_108_864
    connect_timeout: float = 10.0  # seconds to reach PostgreSQL (psycopg's own default: 130)


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
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_PROCESSES))


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
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    connection_reuse_seconds: float = 5.0
    mx_port: int = 25  # for tests only
    source_address: str = ""
    allow_private_destinations: bool = False
    tls: TLSPolicy = "may"
    tls_policy: tuple[tuple[str, TLSPolicy], ...] = ()  # per domain, from [delivery.tls_policy]
    routes: tuple[Route, ...] = ()  # from [delivery.routes."DOMAIN"]


@dataclass(frozen=True, slots=True)
class DNSSettings:
    nameservers: tuple[str, ...] = ()  # "IP" or "IP:PORT"; empty: the system resolver
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class AccountSettings:
    default_plan: str = "free"  # the plan of accounts created without --plan


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The event webhook: batched POSTs from a durable outbox (the events table)."""

    batch_size: int = 100  # events per POST, at most
    timeout: float = 10.0  # seconds for one POST
    retry_first: float = 10.0  # first retry after a failed POST, doubling...
    retry_max: float = 600.0  # ...up to this
    max_age: float = 86_400.0  # give up on an event this long after it happened (24 h)
    max_concurrent: int = 10  # webhooks posted to at once


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """The inbound parse webhook: received mail POSTed to its domain's URL, from the spool."""

    timeout: float = 30.0  # seconds for one POST
    retry_first: float = 60.0  # first retry after a failed POST, doubling...
    retry_max: float = 3600.0  # ...up to this
    max_age: float = 259_200.0  # give up (status `expired`) this long after the mail arrived (3 days)
    max_concurrent: int = 10  # messages posted at once, per delivery process
    # user+tag@domain reaches user@domain when no address matches exactly (Postfix's
    # recipient_delimiter); several characters: each one is a delimiter; "" switches it off.
    recipient_delimiter: str = "+"


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """`[plans.NAME]`: limits of the accounts on plan NAME; 0 means no limit."""

    name: str
    daily_limit: int = 0  # emails (recipients) per UTC calendar day
    monthly_limit: int = 0  # per UTC calendar month
    max_recipients_per_message: int = 0  # 0: smtp.max_recipients
    max_message_size: int = 0  # bytes; 0: smtp.max_message_size
    rate_per_minute: int = 0  # emails per minute, per node


# Built in, and can be overridden or added to with [plans.NAME]: SendGrid's free plan sends
# 200 emails a day.
DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "free": {"daily_limit": 200},
    "unlimited": {},
}


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


@dataclass(frozen=True, slots=True)
class Settings:
    source: str  # the file the settings came from, or "(defaults)"
    server: ServerSettings
    tls: TLSSettings
    storage: StorageSettings
    smtp: SMTPSettings
    auth: AuthSettings
    submission: SubmissionSettings
    delivery: DeliverySettings
    dns: DNSSettings
    listeners: tuple[ListenerSettings, ...]
    accounts: AccountSettings = AccountSettings()
    webhooks: WebhookSettings = WebhookSettings()
    inbound: InboundSettings = InboundSettings()
    plans: tuple[PlanSettings, ...] = tuple(PlanSettings(n, **v) for n, v in DEFAULT_PLANS.items())

    def plan(self, name: str) -> PlanSettings | None:
        return next((p for p in self.plans if p.name == name), None)

    @property
    def data_dir(self) -> Path:
        base = Path(self.source).parent if self.source != "(defaults)" else Path.cwd()
        return (base / self.server.data_dir).resolve()

    @property
    def storage_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{self.data_dir / 'mailrelay.db'}"

    @property
    def cert_path(self) -> Path:
        return Path(self.tls.cert_file) if self.tls.cert_file else self.data_dir / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.tls.key_file) if self.tls.key_file else self.data_dir / "tls" / "key.pem"


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "tls": TLSSettings,
    "storage": StorageSettings,
    "smtp": SMTPSettings,
    "auth": AuthSettings,
    "submission": SubmissionSettings,
    "delivery": DeliverySettings,
    "dns": DNSSettings,
    "accounts": AccountSettings,
    "webhooks": WebhookSettings,
    "inbound": InboundSettings,
}

# Keys of these sections that are tables, parsed apart from the scalar keys.
_TABLE_KEYS = {"delivery": ("routes", "tls_policy")}


# ---------------------------------------------------------------------------------------------
# Value conversion


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if inner is IPNetwork or inner == IPNetwork:
            return 'a list of networks such as ["10.0.0.0/8", "::1/128"]'
        return "a list of strings"
    return str(tp)


def _convert(value: Any, tp: Any, source: str, key: str, *, from_env: bool) -> Any:
    """Check and convert one value to the declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    bad = ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, key, from_env=from_env)
            except ConfigError:
                continue
        raise bad
    if from_env and isinstance(value, str):
        value = _env_literal(value, tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        inner = typing.get_args(tp)[0]
        if inner is str:
            return tuple(value)
        try:
            return tuple(ipaddress.ip_network(v, strict=False) for v in value)
        except ValueError as exc:
            raise ConfigError(source, key, f"expected {_describe(tp)}: {exc}") from None
    raise bad  # pragma: no cover - a type the schema does not use


def _env_literal(text: str, tp: Any) -> Any:
    """Environment values are strings; read them as the declared type when they look like it."""
    origin = typing.get_origin(tp)
    if tp is bool:
        low = text.strip().lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            low, text
        )
    if tp is int:
        try:
            return int(text)
        except ValueError:
            return text
    if tp is float:
        try:
            return float(text)
        except ValueError:
            return text
    if origin is tuple:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                return text
        return [p.strip() for p in stripped.split(",") if p.strip()]
    return text


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str, env: Mapping[str, str],
           env_prefix: str, extra: Mapping[str, Any] | None = None,
           defaults: Mapping[str, Any] | None = None) -> Any:
    """Make `cls` from file values `data`, environment overrides, then `defaults`."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(extra or {})
    for key in data:
        if key not in known:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = dict(extra or {})
    for name in sorted(known):
        env_name = f"{env_prefix}_{name}".upper()
        if env_name in env:
            kwargs[name] = _convert(env[env_name], hints[name], f"environment {env_name}", f"{prefix}.{name}",
                                    from_env=True)
        elif name in data:
            kwargs[name] = _convert(data[name], hints[name], source, f"{prefix}.{name}", from_env=False)
        elif defaults and name in defaults:
            kwargs[name] = _default_value(defaults[name])
    return cls(**kwargs)


def load_settings(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read `path` (None: defaults only) and the environment into Settings."""
    env = os.environ if env is None else env
    source = "(defaults)"
    raw: dict[str, Any] = {}
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(source, "(file)",
                              "file not found; run `mailrelay serve` once to write one, or pass --config") from None
        except PermissionError:
            raise ConfigError(source, "(file)", "file not readable (permission denied)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "(file)", f"not valid TOML: {exc}") from None
    allowed = set(SECTIONS) | {"listener", "plans"}
    for section, value in raw.items():
        if section not in allowed:
            raise ConfigError(source, section, f"unknown section (known: {', '.join(sorted(allowed))})")
        if not isinstance(value, dict):
            raise ConfigError(source, section, "expected a table, e.g. [" + section + "]")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        data = dict(raw.get(name, {}))
        extra = {key: data.pop(key) for key in _TABLE_KEYS.get(name, ()) if key in data}
        if name == "delivery":
            extra = {"routes": _build_routes(extra.get("routes", {}), source),
                     "tls_policy": _build_tls_policy(extra.get("tls_policy", {}), source)}
        built[name] = _build(cls, data, source, name, env, f"{ENV_PREFIX}{name}", extra=extra)
    listeners = _build_listeners(raw.get("listener", {}), source, env)
    plans = _build_plans(raw.get("plans", {}), source, env)
    settings = Settings(source=source, listeners=listeners, plans=plans, **built)
    _check(settings)
    return settings


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
        name = domain.lower().rstrip(".")
        if any(r.domain == name for r in routes):
            raise ConfigError(source, key, f'a second route for "{name}" (domains are case-insensitive)')
        route = _build(Route, table, source, key, {}, "", extra={"domain": name})
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
        out.append((domain.lower().rstrip("."), policy))
    return tuple(out)


def _build_listeners(raw: Mapping[str, Any], source: str, env: Mapping[str, str],
                     ) -> tuple[ListenerSettings, ...]:
    names = list(DEFAULT_LISTENERS) + [n for n in raw if n not in DEFAULT_LISTENERS]
    out = []
    for name in names:
        user = raw.get(name, {})
        if not isinstance(user, dict):
            raise ConfigError(source, f"listener.{name}", "expected a table, e.g. [listener." + name + "]")
        defaults = DEFAULT_LISTENERS.get(name, {})
        env_prefix = f"{ENV_PREFIX}LISTENER_{name}"
        if "listen" not in user and "listen" not in defaults and f"{env_prefix}_LISTEN".upper() not in env:
            raise ConfigError(source, f"listener.{name}.listen",
                              'required for a new listener, e.g. listen = ["0.0.0.0:2526"]')
        listener = _build(ListenerSettings, user, source, f"listener.{name}", env, env_prefix,
                          extra={"name": name}, defaults=defaults)
        for addr in listener.listen:
            try:
                parse_listen(addr)
            except ValueError as exc:
                raise ConfigError(source, f"listener.{name}.listen", str(exc)) from None
        out.append(listener)
    return tuple(out)


def _build_plans(raw: Mapping[str, Any], source: str, env: Mapping[str, str]) -> tuple[PlanSettings, ...]:
    names = list(DEFAULT_PLANS) + [n for n in raw if n not in DEFAULT_PLANS]
    out = []
    for name in names:
        user = raw.get(name, {})
        if not isinstance(user, dict):
            raise ConfigError(source, f"plans.{name}", "expected a table, e.g. [plans." + name + "] daily_limit = 1000")
        if not name or len(name) > 32 or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(source, f"plans.{name}", "a plan name is 1-32 letters, digits, - or _")
        plan = _build(PlanSettings, user, source, f"plans.{name}", env, f"{ENV_PREFIX}PLAN_{name}",
                      extra={"name": name}, defaults=DEFAULT_PLANS.get(name, {}))
        for f in dataclasses.fields(PlanSettings):
            value = getattr(plan, f.name)
            if isinstance(value, int) and value < 0:
                raise ConfigError(source, f"plans.{name}.{f.name}", f"expected 0 (no limit) or more, got {value}")
        out.append(plan)
    return tuple(out)


def _default_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


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


def _check(s: Settings) -> None:
    """Cross-field rules that a single type cannot express."""
    src = s.source
    _check_storage(s)
    if s.smtp.max_recipients < 1:
        raise ConfigError(src, "smtp.max_recipients", "expected at least 1 (RFC 5321 §4.5.3.1.8 asks for 100)")
    if s.smtp.max_message_size < 1024:
        raise ConfigError(src, "smtp.max_message_size", "expected at least 1024 bytes")
    for key in ("idle_timeout", "command_deadline", "data_deadline"):
        if getattr(s.smtp, key) <= 0:
            raise ConfigError(src, f"smtp.{key}", "expected a number of seconds above 0")
    if s.smtp.min_data_rate < 0:
        raise ConfigError(src, "smtp.min_data_rate", "expected 0 (no allowance) or more bytes per second")
    if s.auth.lockout_after < s.auth.slowdown_after:
        raise ConfigError(src, "auth.lockout_after", "expected a number >= auth.slowdown_after")
    if bool(s.tls.cert_file) != bool(s.tls.key_file):
        raise ConfigError(src, "tls.cert_file", "set both tls.cert_file and tls.key_file, or neither")
    uses_trusted = bool(s.submission.trusted_networks) or any(ls.trusted_networks for ls in s.listeners)
    if uses_trusted and not s.submission.trusted_account:
        raise ConfigError(src, "submission.trusted_account",
                          "required when trusted_networks is set: the account that mail from those networks is sent as")
    if s.plan(s.accounts.default_plan) is None:
        raise ConfigError(src, "accounts.default_plan",
                          f"no plan {s.accounts.default_plan!r} (known: {', '.join(p.name for p in s.plans)})")
    if s.webhooks.batch_size < 1:
        raise ConfigError(src, "webhooks.batch_size", "expected at least 1")
    if s.inbound.max_concurrent < 1:
        raise ConfigError(src, "inbound.max_concurrent", "expected at least 1")
    if s.inbound.timeout <= 0 or s.inbound.retry_first <= 0:
        raise ConfigError(src, "inbound.timeout" if s.inbound.timeout <= 0 else "inbound.retry_first",
                          "expected a number of seconds above 0")
    d = s.delivery
    if d.heartbeat_seconds <= 0:
        raise ConfigError(src, "delivery.heartbeat_seconds", "expected a number of seconds above 0")
    if d.dead_after < 2 * d.heartbeat_seconds:
        raise ConfigError(src, "delivery.dead_after",
                          f"expected at least twice delivery.heartbeat_seconds ({2 * d.heartbeat_seconds:g})")
    if d.lease_seconds < d.dead_after:
        raise ConfigError(src, "delivery.lease_seconds", f"expected at least delivery.dead_after ({d.dead_after:g})")
    if any(not (c.isascii() and c.isprintable()) or c in ' @"\\' for c in s.inbound.recipient_delimiter):
        raise ConfigError(src, "inbound.recipient_delimiter",
                          'expected characters such as "+" or "+-" (no space, "@" or quotes), or "" for none')
    if not s.server.hostname or any(c in s.server.hostname for c in " \r\n\t\0"):
        raise ConfigError(src, "server.hostname", "expected a host name such as mail.example.com")


# Schemes (and drivers) mailrelay ships: SQLite, and PostgreSQL through psycopg 3.
_STORAGE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def redact_url(url: str) -> str:
    """`url` with its password shown as ***: for every message and log line that names it.

    The password is what SQLAlchemy will send, whatever it contains ("?", "#", ":"), so
    SQLAlchemy's own parser finds it. An unescaped "@" in it, which SQLAlchemy would split
    off into the host, or a URL it cannot parse, is hidden from the first ":" after "//" up
    to the last "@": too much rather than too little.
    """
    from sqlalchemy.engine import make_url  # here: settings alone need not load SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _redact_greedy(url)
    if parsed.password is not None and url.count("@") > 1:
        return _redact_greedy(url)
    return _QUERY_PASSWORD.sub(r"\1***", parsed.render_as_string(hide_password=True))


def _redact_greedy(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    colon, at = rest.find(":"), rest.rfind("@")
    if sep and 0 <= colon < at:
        rest = f"{rest[:colon]}:***{rest[at:]}"
    return _QUERY_PASSWORD.sub(r"\1***", scheme + sep + rest)


def _check_storage(s: Settings) -> None:
    src, url = s.source, s.storage.url
    if url:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in _STORAGE_SCHEMES:
            raise ConfigError(src, "storage.url", "only sqlite and postgresql are supported "
                              f"(sqlite:///path or postgresql://user@host/db), got {redact_url(url)!r}")
        from sqlalchemy.engine import make_url  # here: settings alone need not load SQLAlchemy
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
            reason = str(exc).replace(url, redact_url(url))
            raise ConfigError(src, "storage.url", f"not a usable database URL ({reason}), got "
                              f"{redact_url(url)!r}; expected sqlite:///PATH or "
                              "postgresql://USER@HOST:PORT/DB") from None
    if s.storage.connect_timeout < 2:
        # libpq and psycopg take whole seconds and treat anything below 2 as 2.
        raise ConfigError(src, "storage.connect_timeout", "expected at least 2 seconds")


DEFAULT_CONFIG = """\
# mailrelay configuration. Every key, with its default: docs/configuration.md.
# Any key can be overridden by an environment variable MAILRELAY_<SECTION>_<KEY>.

[server]
hostname = "{hostname}"
data_dir = "data"            # SQLite database, TLS certificate

[storage]
# url = "postgresql://user@127.0.0.1:5432/mailrelay"   # default: SQLite in data_dir
# min_free = 67108864   # bytes free below which MAIL gets 452 4.3.1 (SQLite only; 0: off)

[submission]
# Networks that may relay without AUTH (like Postfix's mynetworks), sent as trusted_account.
trusted_networks = []
# trusted_account = "demo"
# Demo setting: any From: domain may be used. Before real use, set this to true and add each
# sender domain (`mailrelay domain add example.com --account NAME`), which also sets up DKIM.
require_own_domain = false

[delivery]
# Queued mail is delivered to the recipients' MX servers (port 25 outbound). Set
# enabled = false to only accept and queue (e.g. to try mailrelay without sending anything).
enabled = true

# Listeners (as Postfix's master.cf): 25 and 2525 offer STARTTLS; 587 and 465 require AUTH.
[listener.smtp]
listen = ["0.0.0.0:25"]

[listener.submission]
listen = ["0.0.0.0:587"]

[listener.submissions]
listen = ["0.0.0.0:465"]

[listener.alt]
listen = ["0.0.0.0:2525"]
"""


def write_default_config(path: Path) -> None:
    path.write_text(DEFAULT_CONFIG.format(hostname=socket.gethostname()), encoding="utf-8")
