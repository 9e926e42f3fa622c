"""Suppression lists: per-account addresses that mail is no longer sent to.

Addresses get here from hard bounces (`add_from_bounce`, inside the delivery results
transaction), by hand (`add`, `remove`: the CLI, which also writes an event) or through the
API (`unsubscribe`, `entries`, `remove_kind`). The delivery scheduler asks `suppressed_among`
once per batch of recipients and drops those, whatever list (`kind`) an address is on.

Each entry is on one of SendGrid's lists (KINDS). An address has one entry per account, so it
is on one list at a time: a global unsubscribe moves an address onto "unsubscribes" (a
recipient's own request outranks a bounce, and must survive clearing the bounce list), and a
later bounce leaves it there.
Addresses are stored lower-cased: local parts are case-sensitive in theory (RFC 5321 §2.4),
but no mailbox provider treats them so, and a list that `Bob@` slips past is no list.

Exceptions:

    AccountError                 (accounts.service) a user mistake; exit code 2 in the CLI
     └── SuppressionError        bad address or reason, or no such suppression
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mailrelay.accounts.service import AccountError
from mailrelay.core.address import validate_mailbox
from mailrelay.core.status import EV_SUPPRESSION_ADDED, EV_SUPPRESSION_REMOVED
from mailrelay.core.text import has_control_chars, one_line
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import accounts, suppressions

MAX_REASON = 500
# Addresses per IN (...) query: under SQLite's oldest bound-parameter limit (999).
BATCH = 900

# SendGrid's suppression lists. Hard bounces and the CLI's `add` go to "bounces": SendGrid
# itself lists "550 5.1.1 ... does not exist" replies as bounces, and the CLI predates kinds.
BOUNCES = "bounces"
UNSUBSCRIBES = "unsubscribes"
KINDS = (BOUNCES, "blocks", "invalid_emails", "spam_reports", UNSUBSCRIBES)
GROUPS = "groups"  # a message's unsubscribe group (SendGrid's asm.group_id), beside the lists


def bypassed(*, list_management: bool = False, spam: bool = False, bounce: bool = False,
             unsubscribe: bool = False) -> tuple[str, ...]:
    """The lists a message skips, from SendGrid's bypass_* mail settings: `list_management`
    every list and group, `spam` spam reports, `bounce` bounces, `unsubscribe` global and group
    unsubscribes."""
    if list_management:
        return (*KINDS, GROUPS)
    return tuple(kind for kind, on in (("spam_reports", spam), (BOUNCES, bounce), (UNSUBSCRIBES, unsubscribe),
                                       (GROUPS, unsubscribe)) if on)

class SuppressionError(AccountError):
    """A user mistake about suppressions; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Suppression:
    account: str
    address: str  # lower-cased
    reason: str
    created_at: float
    kind: str = BOUNCES


def normalize_address(address: str) -> str:
    """`address` lower-cased if it is a valid mailbox (RFC 5321/6531), else SuppressionError."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if has_control_chars(text) or not validate_mailbox(text, utf8=True):
        raise SuppressionError(f"not an email address: {address[:80]!r} (expected local@domain)")
    return text.lower()


def _clean_reason(reason: str) -> str:
    reason = one_line(reason)
    if len(reason) > MAX_REASON:
        raise SuppressionError(f"reason too long: at most {MAX_REASON} characters")
    return reason


_COLS = (accounts.c.name.label("account"), suppressions.c.address, suppressions.c.reason,
         suppressions.c.created_at, suppressions.c.kind)


def _suppression(row: Any) -> Suppression:
    return Suppression(account=row.account, address=row.address, reason=row.reason,
                       created_at=row.created_at, kind=row.kind)


class SuppressionService:
    """Suppression lists on SQLAlchemy Core (SQLite and PostgreSQL)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    # -- by hand (CLI) -----------------------------------------------------------------------

    def add(self, account_name: str, address: str, reason: str = "", kind: str = BOUNCES) -> Suppression:
        """Suppress `address` for the account; if it already is, the existing entry is returned
        unchanged (first reason and time kept) and no event is written."""
        address = normalize_address(address)
        reason = _clean_reason(reason)
        kind = _check_kind(kind)
        now = self._clock()
        with self._engine.begin() as conn:
            account_id = _account_id(conn, account_name)
            if self.add_from_bounce(conn, account_id, address, reason, now, kind=kind):
                add_events(conn, [{"account_id": account_id, "recipient": address, "type": EV_SUPPRESSION_ADDED,
                                   "detail": reason, "at": now}])
            row = _entry(conn, account_id, address).one()
        return _suppression(row)

    def get(self, account_name: str, address: str) -> Suppression | None:
        """The entry for `address`, or None; AccountError if there is no such account."""
        address = normalize_address(address)
        with self._engine.connect() as conn:
            account_id = _account_id(conn, account_name)
            row = _entry(conn, account_id, address).first()
        return _suppression(row) if row else None

    def remove(self, account_name: str, address: str) -> Suppression:
        """Take `address` off the account's list; SuppressionError if it is not on it."""
        address = normalize_address(address)
        with self._engine.begin() as conn:
            account_id = _account_id(conn, account_name)
            row = _entry(conn, account_id, address).first()
            if row is None:
                raise SuppressionError(f"{address} is not on the suppression list of account "
                                       f"{account_name!r}")
            conn.execute(suppressions.delete().where(suppressions.c.account_id == account_id,
                                                     suppressions.c.address == address))
            # detail: the reason it had been suppressed for, so the event log tells the story
            add_events(conn, [{"account_id": account_id, "recipient": address, "type": EV_SUPPRESSION_REMOVED,
                               "detail": row.reason, "at": self._clock()}])
        return _suppression(row)

    def list(self, account_name: str | None = None) -> builtins.list[Suppression]:
        """Every suppression, or one account's (AccountError if it does not exist), by account
        name then address."""
        query = (sa.select(*_COLS).join(accounts, accounts.c.id == suppressions.c.account_id)
                 .order_by(accounts.c.name, suppressions.c.address))
        with self._engine.connect() as conn:
            if account_name is not None:
                query = query.where(suppressions.c.account_id == _account_id(conn, account_name))
            rows = conn.execute(query).all()
        return [_suppression(r) for r in rows]

    # -- by account id, one list at a time (the HTTP API) ----------------------------------

    def entries(self, account_id: int, kind: str, *, start: float | None = None, end: float | None = None,
                limit: int = 500, offset: int = 0, address: str | None = None,
                containing: str | None = None) -> builtins.list[Suppression]:
        """The account's entries on list `kind`, newest first: created in [start, end] (whole
        seconds, both inclusive), `address` exactly or addresses `containing` a text."""
        query = (sa.select(*_COLS).join(accounts, accounts.c.id == suppressions.c.account_id)
                 .where(suppressions.c.account_id == account_id, suppressions.c.kind == _check_kind(kind)))
        if start is not None:
            query = query.where(suppressions.c.created_at >= start)
        if end is not None:
            query = query.where(suppressions.c.created_at < end + 1)
        if address is not None:
            query = query.where(suppressions.c.address == normalize_address(address))
        if containing:
            pattern = "%" + containing.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(suppressions.c.address.like(pattern, escape="\\"))
        query = (query.order_by(suppressions.c.created_at.desc(), suppressions.c.address)
                 .limit(limit).offset(offset))
        with self._engine.connect() as conn:
            return [_suppression(r) for r in conn.execute(query)]

    def remove_kind(self, account_id: int, kind: str,
                    addresses: Iterable[str] | None) -> builtins.list[str]:
        """Take `addresses` (None: every address) off the account's list `kind`, each with a
        removal event; returns the addresses that were on it. SuppressionError for a bad one."""
        kind = _check_kind(kind)
        wanted = None if addresses is None else sorted({normalize_address(a) for a in addresses})
        where = [suppressions.c.account_id == account_id, suppressions.c.kind == kind]
        removed: builtins.list[str] = []
        now = self._clock()
        with self._engine.begin() as conn:
            chunks = [None] if wanted is None else [wanted[i:i + BATCH] for i in range(0, len(wanted), BATCH)]
            for chunk in chunks:
                cond = where if chunk is None else [*where, suppressions.c.address.in_(chunk)]
                rows = conn.execute(sa.delete(suppressions).where(*cond)
                                    .returning(suppressions.c.address, suppressions.c.reason)).all()
                add_events(conn, [{"account_id": account_id, "recipient": r.address,
                                   "type": EV_SUPPRESSION_REMOVED, "detail": r.reason, "at": now} for r in rows])
                removed.extend(r.address for r in rows)
        return sorted(removed)

    def unsubscribe(self, account_id: int, addresses: Iterable[str],
                    reason: str = "global unsubscribe") -> builtins.list[str]:
        """Put `addresses` on the account's global unsubscribe list (moving them there from
        another list); returns them normalized. All or nothing: SuppressionError for a bad one."""
        wanted = sorted({normalize_address(a) for a in addresses})
        now = self._clock()
        with self._engine.begin() as conn:
            for i in range(0, len(wanted), BATCH):
                chunk = wanted[i:i + BATCH]
                conn.execute(suppressions.update().where(
                    suppressions.c.account_id == account_id, suppressions.c.address.in_(chunk),
                    suppressions.c.kind != UNSUBSCRIBES).values(kind=UNSUBSCRIBES))
            added = [a for a in wanted
                     if self.add_from_bounce(conn, account_id, a, reason, now, kind=UNSUBSCRIBES)]
            add_events(conn, [{"account_id": account_id, "recipient": a, "type": EV_SUPPRESSION_ADDED,
                               "detail": reason, "at": now} for a in added])
        return wanted

    # -- for delivery ------------------------------------------------------------------------

    def is_suppressed(self, account_id: int, address: str) -> bool:
        return bool(self.suppressed_among(account_id, [address]))

    def suppressed_among(self, account_id: int, addresses: Iterable[str]) -> set[str]:
        """Those of `addresses` (as given, any case) that the account suppresses.

        One query per batch of up to BATCH distinct addresses.
        """
        by_lower: dict[str, builtins.list[str]] = {}
        for a in addresses:
            by_lower.setdefault(a.lower(), []).append(a)
        if not by_lower:
            return set()
        keys = builtins.list(by_lower)
        found: set[str] = set()
        with self._engine.connect() as conn:
            for i in range(0, len(keys), BATCH):
                rows = conn.execute(sa.select(suppressions.c.address).where(
                    suppressions.c.account_id == account_id,
                    suppressions.c.address.in_(keys[i:i + BATCH])))
                for r in rows:
                    found.update(by_lower.get(r.address, ()))
        return found

    @staticmethod
    def add_from_bounce(conn: sa.Connection, account_id: int, address: str, reason: str,
                        now: float, *, kind: str = BOUNCES) -> bool:
        """Suppress `address` within the caller's transaction; True if it was not already.

        Insert-if-absent in one statement (SQLite and PostgreSQL `ON CONFLICT DO NOTHING`):
        a failed plain INSERT would abort the caller's whole PostgreSQL transaction, and a
        select-then-insert races with a concurrent delivery of the same address.
        """
        values = {"account_id": account_id, "address": address.lower(),
                  "reason": one_line(reason)[:MAX_REASON],
                  "created_at": now, "kind": kind}
        target = ["account_id", "address"]
        if conn.dialect.name == "sqlite":
            stmt: sqlite.Insert | postgresql.Insert = (sqlite.insert(suppressions).values(**values)
                                   .on_conflict_do_nothing(index_elements=target))
        elif conn.dialect.name == "postgresql":
            stmt = (postgresql.insert(suppressions).values(**values)
                    .on_conflict_do_nothing(index_elements=target))
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise NotImplementedError(f"no insert-if-absent for {conn.dialect.name}")
        # RETURNING, not rowcount: under SQLAlchemy the psycopg driver reports -1 for INSERTs.
        return conn.execute(stmt.returning(suppressions.c.id)).first() is not None


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SuppressionError(f"no suppression list {kind[:40]!r} (one of {', '.join(KINDS)})")
    return kind


def _account_id(conn: sa.Connection, name: str) -> int:
    account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).scalar()
    if account_id is None:
        raise AccountError(f"no account named {name[:80]!r}")
    return int(account_id)


def _entry(conn: sa.Connection, account_id: int, address: str) -> sa.Result[Any]:
    """The suppression-list entry of one (lower-cased) address, with its account's name."""
    return conn.execute(sa.select(*_COLS).join(accounts, accounts.c.id == suppressions.c.account_id)
                        .where(suppressions.c.account_id == account_id, suppressions.c.address == address))
