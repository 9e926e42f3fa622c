"""API key scopes: SendGrid's permission names, limited to the ones mailrelay can honour.

A key holds either a list of these names or full access (stored as NULL: every name here,
including any added later). The names and their spelling are SendGrid's (its API key and
Teammate permission lists), so a scope list written for SendGrid means the same here. One
rule is SendGrid's nesting: `suppression.<verb>` also covers each suppression list's own
`suppression.<list>.<verb>`. SendGrid has no scope for reading a key's own scopes: any
valid key may.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable

_CRUD = ("create", "read", "update", "delete")
SUPPRESSION_LISTS = ("blocks", "bounces", "invalid_emails", "spam_reports", "unsubscribes")


def _crud(*families: str) -> tuple[str, ...]:
    return tuple(f"{f}.{verb}" for f in families for verb in _CRUD)


MAIL_SEND = "mail.send"

FULL_ACCESS: frozenset[str] = frozenset((
    MAIL_SEND,
    *_crud("mail.batch", "user.scheduled_sends", "api_keys"),
    *_crud("suppression", *(f"suppression.{name}" for name in SUPPRESSION_LISTS)),
    *_crud("asm.groups", "asm.groups.suppressions", "asm.suppressions.global"),
    *_crud("templates", "templates.versions", "templates.versions.activate"),
    *_crud("whitelabel"),
    *_crud("user.webhooks.event.settings", "user.webhooks.event.test",
           "user.webhooks.parse.settings"),
    "stats.read", "stats.global.read", "categories.read", "categories.stats.read",
    "categories.stats.sums.read", "messages.read",
))


def unknown(requested: Iterable[str]) -> list[str]:
    """The names in `requested` that are not scopes mailrelay knows, in their given order."""
    return [s for s in requested if s not in FULL_ACCESS]


def allows(scopes: Collection[str] | None, needed: str) -> bool:
    """Whether a key with `scopes` (None: full access) may do what `needed` guards."""
    if scopes is None or needed in scopes:
        return True
    family, _, verb = needed.rpartition(".")
    parent, _, name = family.partition(".")
    return parent == "suppression" and name in SUPPRESSION_LISTS and f"suppression.{verb}" in scopes


def dump(chosen: Iterable[str] | None) -> str | None:
    """The stored form of a key's scopes: a JSON list, or NULL for full access."""
    return None if chosen is None else json.dumps(list(chosen))


def load(stored: str | None) -> tuple[str, ...] | None:
    return None if stored is None else tuple(json.loads(stored))
