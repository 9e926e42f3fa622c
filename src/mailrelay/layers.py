"""The layers of mailrelay, bottom first: the one table of which package may import which.

A module may import from its own package and from packages on lower layers, never from one on
its own layer or above; so no two packages import each other, and a change low down cannot be
bent by what is built on top of it. `tests/unit/test_layers.py` reads every module's imports
(with `ast`, lazy and TYPE_CHECKING imports too) and fails on an import that goes against this
table, on a package missing from it, and on any import cycle between modules.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "layers"),  # vocabulary without I/O: addresses, replies, statuses, headers, ids
    ("settings", "resolver", "logs", "metrics"),  # the config file, DNS behind an interface, log setup, counters
    ("store",),  # the database: schema, migrations, health, the event log
    ("smtp", "mailauth", "quota"),  # the session engine; DKIM/SPF/DMARC; plans and usage
    ("accounts", "spool"),  # accounts, keys, domains, suppressions; the durable queue
    ("events", "sandbox"),  # event queries, payloads and webhook posting; captured test mail
    ("submission", "inbound", "delivery"),  # the two SMTP policies; outbound delivery
    ("router", "http", "web"),  # port 25: which policy answers a session; the HTTP API; the dashboard
    ("app",),  # builds everything from Settings and wires it
    ("cli",),  # the command line
    ("__main__",),
)


def layer_of(unit: str) -> int | None:
    """The layer number (0 = bottom) of a top-level package or module of mailrelay."""
    for number, names in enumerate(LAYERS):
        if unit in names:
            return number
    return None
