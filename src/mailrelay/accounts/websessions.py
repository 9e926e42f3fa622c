"""Dashboard sessions: a random token in the browser's cookie, its SHA-256 in web_sessions.

A session ends at sign-out (its row deleted), at `expires_at` (fixed at sign-in), or when its
account is deleted. Each has a CSRF token of its own that every form carries back. Tokens are
never stored or logged; a lookup compares hashes, not secrets.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from mailrelay.store.schema import accounts
from mailrelay.store.schema import web_sessions as T

LIFETIME = 12 * 3600.0  # seconds from sign-in to the session's end


@dataclass(frozen=True, slots=True)
class WebSession:
    account_id: int
    account: str  # the account's name
    csrf: str
    expires_at: float
    operator: bool = False  # the account may use the operator pages (read at every request)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class WebSessions:
    def __init__(self, engine: sa.Engine, lifetime: float = LIFETIME) -> None:
        self._engine = engine
        self.lifetime = lifetime

    def create(self, account_id: int, now: float) -> tuple[str, WebSession]:
        """A new session: (the cookie's token, the session)."""
        token = secrets.token_urlsafe(32)
        session = WebSession(account_id, "", secrets.token_urlsafe(32), now + self.lifetime)
        with self._engine.begin() as conn:
            conn.execute(T.delete().where(T.c.expires_at <= now))  # the ended ones go as new ones come
            conn.execute(T.insert().values(token_hash=_hash(token), account_id=account_id, csrf=session.csrf,
                                           created_at=now, expires_at=session.expires_at))
        return token, session

    def get(self, token: str, now: float) -> WebSession | None:
        """The live session of `token`, if its account is active; one query for both."""
        if not token or len(token) > 128:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(T.c.account_id, accounts.c.name, T.c.csrf, T.c.expires_at,
                                         accounts.c.operator)
                               .join(accounts, accounts.c.id == T.c.account_id)
                               .where(T.c.token_hash == _hash(token), T.c.expires_at > now,
                                      accounts.c.status == "active")).first()
        return None if row is None else WebSession(row.account_id, row.name, row.csrf, row.expires_at,
                                                   bool(row.operator))

    def end(self, token: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(T.delete().where(T.c.token_hash == _hash(token)))
