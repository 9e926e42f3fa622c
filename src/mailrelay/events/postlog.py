"""The event webhook's last POSTs per account: when, where, what came back and how fast.

The dispatcher (events.webhook) records each POST it makes, in the transaction that settles its
events; the settings' test POST (the API's and the dashboard's button) records its own. Only
the newest KEEP of an account are kept: every record trims the older ones, so the table stays
at most KEEP rows per account whatever the volume.

Security: the URL is stored redacted (events.poster.redact: no user info, no query), so a
token in the URL never reaches this table; an error text is redacted the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.events.poster import redact
from mailrelay.store.schema import webhook_posts

KEEP = 50  # POSTs kept per account
MAX_ERROR = 200


@dataclass(frozen=True, slots=True)
class PostRecord:
    """One POST: its HTTP status, or why there was none (`error`)."""

    at: float
    url: str  # redacted
    events: int  # events in the body (1 for a test POST)
    status: int | None
    seconds: float  # from sending to the answer's status line (or to the failure)
    error: str | None = None
    test: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def record(conn: Connection, account_id: int, posts: Sequence[PostRecord]) -> None:
    """Add `posts` to the account's log and drop all but its newest KEEP."""
    if not posts:
        return
    conn.execute(webhook_posts.insert(), [
        {"account_id": account_id, "at": p.at, "url": redact(p.url)[:2000], "events": p.events,
         "status": p.status, "seconds": p.seconds, "error": (p.error or None) and p.error[:MAX_ERROR],
         "test": p.test} for p in posts])
    oldest_kept = (sa.select(webhook_posts.c.id).where(webhook_posts.c.account_id == account_id)
                   .order_by(webhook_posts.c.id.desc()).limit(1).offset(KEEP - 1).scalar_subquery())
    conn.execute(webhook_posts.delete().where(webhook_posts.c.account_id == account_id,
                                              webhook_posts.c.id < oldest_kept))


def record_one(engine: sa.Engine, account_id: int, post: PostRecord) -> None:
    with engine.begin() as conn:
        record(conn, account_id, [post])


def last_posts(engine: sa.Engine, account_id: int, limit: int = KEEP) -> list[PostRecord]:
    """The account's newest POSTs, newest first."""
    query = (sa.select(webhook_posts).where(webhook_posts.c.account_id == account_id)
             .order_by(webhook_posts.c.id.desc()).limit(limit))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [PostRecord(at=r.at, url=r.url, events=r.events, status=r.status, seconds=r.seconds, error=r.error,
                       test=bool(r.test)) for r in rows]
