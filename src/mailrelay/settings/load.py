"""The whole configuration: `Settings`, read from the TOML file and the environment, checked.

Each section's type lives in the module of its group; this one reads the file, builds every
section in turn (nested tables first), and applies the rules that span sections.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailrelay.settings.convert import ENV_PREFIX, ConfigError, build
from mailrelay.settings.delivery import TABLE_KEYS as DELIVERY_TABLE_KEYS
from mailrelay.settings.delivery import DeliverySettings, build_delivery_tables
from mailrelay.settings.http import HTTPSettings
from mailrelay.settings.plans import DEFAULT_PLANS, AccountSettings, PlanSettings, build_plans
from mailrelay.settings.retention import RetentionSettings, check_retention
from mailrelay.settings.server import DNSSettings, ServerSettings, TLSSettings
from mailrelay.settings.smtp import (
    AuthSettings,
    ListenerSettings,
    SMTPSettings,
    SubmissionSettings,
    build_listeners,
    parse_listen,
)
from mailrelay.settings.storage import StorageSettings, check_storage
from mailrelay.settings.webhooks import InboundSettings, WebhookSettings


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
    # Frozen dataclasses: one shared default instance is safe (ruff cannot see that across modules).
    accounts: AccountSettings = AccountSettings()  # noqa: RUF009
    webhooks: WebhookSettings = WebhookSettings()  # noqa: RUF009
    inbound: InboundSettings = InboundSettings()  # noqa: RUF009
    http: HTTPSettings = HTTPSettings()  # noqa: RUF009
    retention: RetentionSettings = RetentionSettings()  # noqa: RUF009
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


# The one-table sections, in the order they are built; [listener.NAME] and [plans.NAME] apart.
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
    "http": HTTPSettings,
    "retention": RetentionSettings,
}


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
        extra: dict[str, Any] = {}
        if name == "delivery":
            tables = {key: data.pop(key) for key in DELIVERY_TABLE_KEYS if key in data}
            extra = build_delivery_tables(tables, source)
        built[name] = build(cls, data, source, name, env, f"{ENV_PREFIX}{name}", extra=extra)
    listeners = build_listeners(raw.get("listener", {}), source, env)
    plans = build_plans(raw.get("plans", {}), source, env)
    settings = Settings(source=source, listeners=listeners, plans=plans, **built)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """Cross-field rules that a single type cannot express."""
    src = s.source
    check_storage(src, s.storage)
    check_retention(src, s.retention)
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
    if not 0 < d.poll_seconds <= 3600:
        raise ConfigError(src, "delivery.poll_seconds", "expected a number of seconds above 0, at most 3600")
    if d.dead_after < 2 * d.heartbeat_seconds:
        raise ConfigError(src, "delivery.dead_after",
                          f"expected at least twice delivery.heartbeat_seconds ({2 * d.heartbeat_seconds:g})")
    if d.lease_seconds < d.dead_after:
        raise ConfigError(src, "delivery.lease_seconds", f"expected at least delivery.dead_after ({d.dead_after:g})")
    if any(not (c.isascii() and c.isprintable()) or c in ' @"\\' for c in s.inbound.recipient_delimiter):
        raise ConfigError(src, "inbound.recipient_delimiter",
                          'expected characters such as "+" or "+-" (no space, "@" or quotes), or "" for none')
    try:
        parse_listen(s.http.listen)
    except ValueError as exc:
        raise ConfigError(src, "http.listen", str(exc)) from None
    if s.http.max_body < 1024:
        raise ConfigError(src, "http.max_body", "expected at least 1024 bytes")
    if s.http.max_concurrent < 1:
        raise ConfigError(src, "http.max_concurrent", "expected at least 1")
    if not 1 <= s.http.processes <= 64:
        raise ConfigError(src, "http.processes", "expected 1 to 64")
    if not s.server.hostname or any(c in s.server.hostname for c in " \r\n\t\0"):
        raise ConfigError(src, "server.hostname", "expected a host name such as mail.example.com")
