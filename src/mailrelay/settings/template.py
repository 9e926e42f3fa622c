"""The commented configuration file `mailrelay serve` writes on its first start."""

from __future__ import annotations

import socket
from pathlib import Path

DEFAULT_CONFIG = """\
# mailrelay configuration. Every key, with its default: docs/configuration.md.
# Any key can be overridden by an environment variable MAILRELAY_<SECTION>_<KEY>.

[server]
hostname = "{hostname}"
data_dir = "data"            # SQLite database, TLS certificate
# log_format = "json"        # one JSON object per log line; default "text"

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

[http]
# The HTTP API (SendGrid v3-compatible: POST /v3/mail/send with an API key as Bearer token).
listen = "127.0.0.1:8025"    # loopback: put a TLS proxy in front, or set tls = true
# metrics_networks = ["127.0.0.0/8", "::1/128"]   # who may read /metrics (Prometheus) without a key

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
