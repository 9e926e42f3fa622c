"""The configuration file, parsed once into frozen, typed settings.

Sources, later ones winning: built-in defaults, the TOML file, environment variables
`MAILRELAY_<SECTION>_<KEY>` (listeners: `MAILRELAY_LISTENER_<NAME>_<KEY>`). Every mistake
raises `ConfigError` naming the file, the key and what was expected; the CLI turns it into one
line and exit code 2. `docs/configuration.md` documents every key.

One module per group of sections (`server`, `storage`, `smtp`, `delivery`, `webhooks`,
`plans`, `retention`), `convert` for reading a value as its declared type, `load` for the file as a whole
and the rules across sections, `template` for the file written on first start. Code outside
this package imports from here.
"""

from mailrelay.settings.convert import ConfigError, IPNetwork
from mailrelay.settings.delivery import DeliverySettings, Route, TLSPolicy
from mailrelay.settings.http import HTTPSettings
from mailrelay.settings.load import SECTIONS, Settings, load_settings
from mailrelay.settings.plans import DEFAULT_PLANS, AccountSettings, PlanSettings
from mailrelay.settings.retention import RetentionSettings
from mailrelay.settings.server import DNSSettings, ServerSettings, TLSSettings
from mailrelay.settings.smtp import AuthSettings, ListenerSettings, SMTPSettings, SubmissionSettings, parse_listen
from mailrelay.settings.storage import StorageSettings, redact_url
from mailrelay.settings.template import DEFAULT_CONFIG, write_default_config
from mailrelay.settings.webhooks import InboundSettings, WebhookSettings

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_PLANS",
    "SECTIONS",
    "AccountSettings",
    "AuthSettings",
    "ConfigError",
    "DNSSettings",
    "DeliverySettings",
    "HTTPSettings",
    "IPNetwork",
    "InboundSettings",
    "ListenerSettings",
    "PlanSettings",
    "RetentionSettings",
    "Route",
    "SMTPSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "SubmissionSettings",
    "TLSPolicy",
    "TLSSettings",
    "WebhookSettings",
    "load_settings",
    "parse_listen",
    "redact_url",
    "write_default_config",
]
