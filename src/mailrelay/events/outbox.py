"""The webhook outbox: events rows whose `webhook_due_at` is set. Claiming and settling them.

These run inside the spool writer's transactions (`SpoolWriter.run`). Claiming an event moves
its due time to the end of a lease, so an event in flight is simply "not yet due" to every
other dispatcher, and becomes due again by itself if its process dies.

Order per account: an account's events are claimed oldest first, and never past one of its
events that is not due (in flight, or waiting for a retry), so a receiver sees each account's
events in order even across retries and several dispatchers. Events queued behind a failing
one have their due time moved to its retry time, so they stop being claim candidates.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.events.payload import EventRow
from mailrelay.store.schema import accounts, events, messages

# PostgreSQL: one claimer at a time across nodes and workers (pg_try_advisory_xact_lock):
# without it, two claims in flight at once could take the head and the tail of one account.
_ADVISORY_KEY = 0x6D72_7768  # "mrwh"
# `account_id + 0` keeps the planner off ix_events_account_id (which would scan an account's
# whole history) and on the small partial index of pending events.
_ACCOUNT = (events.c.account_id + 0)
_LOOKS = 4  # candidate windows read per claim at most, each past the accounts found blocked


@dataclass(frozen=True, slots=True)
class AccountBatch:
    """Claimed events of one account, oldest first, with where to post them."""

    account_id: int
    url: str
    secret: str
    rows: list[EventRow]
    attempts: int  # failed posts so far of the oldest event
    signing_key: str | None = None  # ECDSA P-256 PEM: also signed as SendGrid signs (events.signing)


@dataclass(frozen=True, slots=True)
class Claimed:
    batches: list[AccountBatch]
    expired: int  # events given up because they were older than max_age


def claim(conn: Connection, *, now: float, lease_until: float, max_events: int, max_accounts: int,
          per_account: int, max_age: float, busy: Collection[int] = ()) -> Claimed:
    """Claim due events of at most `max_accounts` accounts (not in `busy`), at most
    `per_account` each, for posting until `lease_until`."""
    expired = conn.execute(events.update().where(
        events.c.webhook_due_at.is_not(None), events.c.webhook_due_at <= now,
        events.c.at < now - max_age).values(webhook_due_at=None, webhook_lease_until=None)).rowcount or 0
    if conn.dialect.name == "postgresql" and not conn.execute(
            sa.select(sa.func.pg_try_advisory_xact_lock(_ADVISORY_KEY))).scalar():
        return Claimed([], expired)
    by_account: dict[int, list[int]] = {}
    orphans: list[int] = []
    blockers: dict[int, int] = {}
    # Accounts whose due events cannot go (in flight here, or behind one of their events that
    # is not due) are left out of the next look: a backlog of one account in the first
    # `max_events` must not keep every other account waiting until it is drained.
    excluded: set[int] = set()
    for _ in range(_LOOKS):
        where = [events.c.webhook_due_at.is_not(None), events.c.webhook_due_at <= now]
        if excluded:  # not the first look: orphans (no account, NOT IN is null) were seen then
            where.append(_ACCOUNT.not_in(list(excluded)))
        candidates = conn.execute(sa.select(events.c.id, events.c.account_id).where(*where)
                                  .order_by(events.c.id).limit(max_events)).all()
        found: dict[int, list[int]] = {}
        before = len(excluded)
        for row in candidates:
            if row.account_id is None:
                orphans.append(row.id)
            elif row.account_id in busy:
                excluded.add(row.account_id)
            else:
                found.setdefault(row.account_id, []).append(row.id)
        # The oldest event of each account that is pending but not due: nothing past it may go.
        found_blockers = dict(conn.execute(
            sa.select(_ACCOUNT, sa.func.min(events.c.id))
            .where(events.c.webhook_due_at.is_not(None), events.c.webhook_due_at > now,
                   _ACCOUNT.in_(list(found)))
            .group_by(_ACCOUNT)).all()) if found else {}
        by_account.update(found)
        blockers.update(found_blockers)
        blocked = {a for a, ids in found.items() if a in found_blockers and ids[0] > found_blockers[a]}
        excluded |= blocked
        if len(candidates) < max_events or blocked != found.keys() or len(excluded) == before:
            break  # all seen, or some account can go, or nothing more to leave out
    if not by_account and not orphans:
        return Claimed([], expired)
    chosen: dict[int, list[int]] = {}
    held_back: dict[int, list[int]] = {}  # blocker id -> candidates to move behind it
    for account_id, ids in by_account.items():
        blocker = blockers.get(account_id)
        ready = [i for i in ids if blocker is None or i < blocker]
        if blocker is not None and len(ready) < len(ids):
            held_back[blocker] = [i for i in ids if i > blocker]
        if ready and len(chosen) < max_accounts:
            chosen[account_id] = ready[:per_account]
    _hold_back(conn, held_back)
    # Only accounts whose webhook is on now: one turned off (or disabled) since these events
    # were recorded gets none of them.
    hooks = {r.id: r for r in conn.execute(
        sa.select(accounts.c.id, accounts.c.webhook_url, accounts.c.webhook_secret,
                  accounts.c.webhook_signing_key)
        .where(accounts.c.id.in_(list(chosen)), accounts.c.webhook_url.is_not(None),
               accounts.c.webhook_secret.is_not(None), accounts.c.webhook_enabled == sa.true()))} if chosen else {}
    unhooked = [i for a, ids in chosen.items() if a not in hooks for i in ids]
    _clear(conn, orphans + unhooked)  # the webhook was turned off: nothing to post these to
    batches = []
    claimed: list[int] = []
    for account_id, ids in chosen.items():
        hook = hooks.get(account_id)
        if hook is None:
            continue
        rows, attempts = _load(conn, ids)
        batches.append(AccountBatch(account_id, hook.webhook_url, hook.webhook_secret, rows, attempts,
                                    hook.webhook_signing_key))
        claimed.extend(ids)
    if claimed:
        conn.execute(events.update().where(events.c.id.in_(claimed)).values(
            webhook_due_at=lease_until, webhook_lease_until=lease_until))
    return Claimed(batches, expired)


def _hold_back(conn: Connection, held_back: dict[int, list[int]]) -> None:
    """Move events queued behind a retrying one to its retry time (not behind one in flight:
    that one settles within seconds)."""
    if not held_back:
        return
    due = {r.id: r.webhook_due_at for r in conn.execute(
        sa.select(events.c.id, events.c.webhook_due_at).where(
            events.c.id.in_(list(held_back)), events.c.webhook_lease_until.is_(None)))}
    for blocker, ids in held_back.items():
        if blocker in due:
            conn.execute(events.update().where(events.c.id.in_(ids)).values(webhook_due_at=due[blocker]))


def _load(conn: Connection, ids: Sequence[int]) -> tuple[list[EventRow], int]:
    """The events with their message's Message-ID and tags: one query."""
    query = (sa.select(events, messages.c.message_id_header, messages.c.tags)
             .select_from(events.outerjoin(messages, messages.c.id == events.c.message_id))
             .where(events.c.id.in_(list(ids))).order_by(events.c.id))
    rows = conn.execute(query).all()
    out = [EventRow(id=r.id, account_id=r.account_id, message_id=r.message_id, recipient=r.recipient,
                    type=r.type, detail=r.detail, at=r.at, attempt=r.attempt, reply=r.reply, mx_host=r.mx_host,
                    smtp_id=r.message_id_header, tags=r.tags) for r in rows]
    return out, (rows[0].webhook_attempts if rows else 0)


def _clear(conn: Connection, ids: Sequence[int]) -> None:
    if ids:
        conn.execute(events.update().where(events.c.id.in_(list(ids))).values(
            webhook_due_at=None, webhook_lease_until=None))


def settle(conn: Connection, *, sent: Sequence[int], failed: Sequence[int], retry_at: float | None) -> None:
    """Posted events leave the outbox; failed ones wait until `retry_at` (None: given up)."""
    _clear(conn, sent)
    if failed:
        conn.execute(events.update().where(events.c.id.in_(list(failed))).values(
            webhook_attempts=events.c.webhook_attempts + 1, webhook_due_at=retry_at, webhook_lease_until=None))


def stop_account(conn: Connection, account_id: int) -> int:
    """The account's webhook is off: its pending events are not posted; returns how many."""
    return conn.execute(events.update().where(
        events.c.webhook_due_at.is_not(None), _ACCOUNT.in_([account_id])).values(
        webhook_due_at=None, webhook_lease_until=None)).rowcount or 0
