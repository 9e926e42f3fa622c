"""An account's event webhook: its URL and signing secret (`mailrelay account webhook`), and
SendGrid's settings of it (on/off, which events, the signing key pair), by account id for the
HTTP API.

Security: the secret is generated here (secrets.token_urlsafe) and shown only on request
(`--show-secret`); of the ECDSA signing key only the public half ever leaves. A changed URL or
setting applies to every event recorded after the change commits (store/eventlog.py reads them
in the event's INSERT).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailrelay.accounts.service import AccountError
from mailrelay.core.ips import is_address, is_local_name, is_public_text
from mailrelay.events import outbox, signing
from mailrelay.store.eventlog import dump_event_filter, load_event_filter
from mailrelay.store.schema import accounts

MAX_URL = 2000
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class Webhook:
    account: str
    url: str | None
    secret: str | None
    enabled: bool = True  # False: switched off through the API (the URL is kept)


def validate_url(url: str, *, allow_private: bool = True) -> str:
    """An absolute http(s) URL with a host; AccountError (exit 2) saying why not. Without
    `allow_private` its host may not be localhost or an internal address (core.ips); a name
    that resolves to one is refused when posting (events.poster)."""
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
    if not allow_private and (is_local_name(parts.hostname) or (
            is_address(parts.hostname) and not is_public_text(parts.hostname))):
        raise AccountError(f"webhook URL must not point at a local or internal address ({parts.hostname}); "
                           "the server's operator can allow that with [webhooks] allow_private_targets")
    return url




@dataclass(frozen=True, slots=True)
class EventSettings:
    """SendGrid's event webhook settings of one account."""

    url: str | None
    enabled: bool
    events: frozenset[str]  # SendGrid event names switched on (core.status.SENDGRID_EVENTS)
    secret: str | None  # our HMAC secret
    signing_key: str | None  # ECDSA P-256 PEM; None: SendGrid signing off


class WebhookService:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def get(self, name: str) -> Webhook:
        with self._engine.connect() as conn:
            row = self._row(conn, name)
        return Webhook(name, row.webhook_url, row.webhook_secret, row.webhook_enabled)

    def set_url(self, name: str, url: str) -> Webhook:
        """Post the account's events to `url` from now on (switched on, if the API had switched
        it off); a secret is made if it has none."""
        url = validate_url(url)
        with self._engine.begin() as conn:
            row = self._row(conn, name)
            secret = row.webhook_secret or signing.new_secret()
            conn.execute(accounts.update().where(accounts.c.id == row.id).values(
                webhook_url=url, webhook_secret=secret, webhook_enabled=True, updated_at=time.time()))
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
        return Webhook(name, row.webhook_url, secret, row.webhook_enabled)

    # -- by account id (the HTTP API: the caller's own account) ---------------------------------

    def settings(self, account_id: int) -> EventSettings:
        with self._engine.connect() as conn:
            return self._settings(conn, account_id)

    def update(self, account_id: int, *, url: str | None = None, clear_url: bool = False,
               enabled: bool | None = None, events: dict[str, bool] | None = None) -> EventSettings:
        """Change what is given: the URL (validated; a secret is made if there is none), on/off,
        and switches of single events (the others keep theirs). Turning it off drops the pending
        events from the outbox, as `turn_off` does."""
        values: dict[str, Any] = {}
        if clear_url:
            values["webhook_url"] = None
        elif url is not None:
            values["webhook_url"] = validate_url(url)
        if enabled is not None:
            values["webhook_enabled"] = enabled
        with self._engine.begin() as conn:
            now = self._settings(conn, account_id)
            if events:
                chosen = {n for n in now.events if events.get(n, True)} | {n for n, on in events.items() if on}
                values["webhook_events"] = dump_event_filter(chosen)
            if values.get("webhook_url") and not now.secret:
                values["webhook_secret"] = signing.new_secret()
            if values:
                conn.execute(accounts.update().where(accounts.c.id == account_id).values(
                    updated_at=time.time(), **values))
            if enabled is False or clear_url:
                outbox.stop_account(conn, account_id)
            return self._settings(conn, account_id)

    def set_signed(self, account_id: int, on: bool) -> str | None:
        """SendGrid's signing on (a new key pair unless one exists) or off (the key is dropped);
        the public key (base64 DER) or None."""
        with self._engine.begin() as conn:
            key = self._settings(conn, account_id).signing_key
            if on and key is None:
                key = signing.new_signing_key()
            elif not on:
                key = None
            conn.execute(accounts.update().where(accounts.c.id == account_id).values(
                webhook_signing_key=key, updated_at=time.time()))
        return signing.public_key(key) if key else None

    @staticmethod
    def _settings(conn: sa.Connection, account_id: int) -> EventSettings:
        row = conn.execute(sa.select(accounts.c.webhook_url, accounts.c.webhook_enabled, accounts.c.webhook_events,
                                     accounts.c.webhook_secret, accounts.c.webhook_signing_key)
                           .where(accounts.c.id == account_id)).first()
        if row is None:
            raise AccountError(f"no account with id {account_id}")
        return EventSettings(row.webhook_url, bool(row.webhook_enabled), load_event_filter(row.webhook_events),
                             row.webhook_secret, row.webhook_signing_key)

    @staticmethod
    def _row(conn: sa.Connection, name: str) -> Any:
        row = conn.execute(sa.select(accounts.c.id, accounts.c.webhook_url, accounts.c.webhook_secret,
                                     accounts.c.webhook_enabled)
                           .where(accounts.c.name == name)).first()
        if row is None:
            raise AccountError(f"no account named {name!r}")
        return row
