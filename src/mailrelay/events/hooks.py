"""An account's event webhook: its URL and signing secret (`mailrelay account webhook`).

Security: the secret is generated here (secrets.token_urlsafe) and shown only on request
(`--show-secret`). A changed URL applies to every event recorded after the change commits
(store/eventlog.py reads it in the event's INSERT).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailrelay.accounts.service import AccountError
from mailrelay.events import outbox, signing
from mailrelay.store.schema import accounts

MAX_URL = 2000
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class Webhook:
    account: str
    url: str | None
    secret: str | None


def validate_url(url: str) -> str:
    """An absolute http(s) URL with a host; AccountError (exit 2) saying why not."""
    if len(url) > MAX_URL or _BAD_CHARS.search(url):
        raise AccountError(f"webhook URL must be at most {MAX_URL} characters, without spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise AccountError(f"webhook URL is not valid: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise AccountError("webhook URL must start with http:// or https:// and name a host, "
                           "e.g. https://hooks.example.com/mailrelay")
    if parts.fragment:
        raise AccountError("webhook URL must not have a #fragment")
    return url


class WebhookService:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def get(self, name: str) -> Webhook:
        with self._engine.connect() as conn:
            row = self._row(conn, name)
        return Webhook(name, row.webhook_url, row.webhook_secret)

    def set_url(self, name: str, url: str) -> Webhook:
        """Post the account's events to `url` from now on; a secret is made if it has none."""
        url = validate_url(url)
        with self._engine.begin() as conn:
            row = self._row(conn, name)
            secret = row.webhook_secret or signing.new_secret()
            conn.execute(accounts.update().where(accounts.c.id == row.id).values(
                webhook_url=url, webhook_secret=secret, updated_at=time.time()))
        return Webhook(name, url, secret)

    def turn_off(self, name: str) -> int:
        """No more posts: the URL is removed and pending events are dropped from the outbox
        (they stay in the event log). Returns how many were pending."""
        with self._engine.begin() as conn:
            row = self._row(conn, name)
            conn.execute(accounts.update().where(accounts.c.id == row.id).values(
                webhook_url=None, updated_at=time.time()))
            dropped = outbox.stop_account(conn, row.id)
        return dropped

    def rotate_secret(self, name: str) -> Webhook:
        """A new secret, used for every POST from now on (retries included)."""
        with self._engine.begin() as conn:
            row = self._row(conn, name)
            secret = signing.new_secret()
            conn.execute(accounts.update().where(accounts.c.id == row.id).values(
                webhook_secret=secret, updated_at=time.time()))
        return Webhook(name, row.webhook_url, secret)

    @staticmethod
    def _row(conn: sa.Connection, name: str) -> Any:
        row = conn.execute(sa.select(accounts.c.id, accounts.c.webhook_url, accounts.c.webhook_secret)
                           .where(accounts.c.name == name)).first()
        if row is None:
            raise AccountError(f"no account named {name!r}")
        return row
