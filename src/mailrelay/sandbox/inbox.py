"""The sandbox inbox: captured messages of sandbox accounts, one inbox per account.

A sandbox message is in the inbox while one of its recipients is `captured`. `release` sends it
for real; `clear` deletes captures, but not a message with a recipient still waiting for
delivery (another domain not captured yet). Every query takes an optional account name and
then sees that account's mail only: `get`, `release` and `clear` scoped to account A treat a
message of account B as unknown.

`MessageBox` is the account-scoped view itself (list with search, count, get, clear), over the
messages a subclass selects: `Inbox` here, received mail in `inbound.mailbox`. `mailrelay
inbox` shows both.

Exceptions: `NoSuchCapture(LookupError)` for an id that is not in the box (of the account), and
its subclass `NotSandbox` for received mail given to `release`; `AccountError` for an unknown
account name.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.accounts.service import AccountError
from mailrelay.core.linelength import fit_lines
from mailrelay.core.status import CAPTURED, EV_DELETED_BY_OPERATOR, EV_RELEASED, PENDING, QUEUED
from mailrelay.store import bodies
from mailrelay.store.eventlog import add_events
from mailrelay.store.schema import accounts, attempts, message_categories, messages, recipients

SEARCH_PAGE = 200  # messages read per query while searching


class NoSuchCapture(LookupError):
    def __init__(self, queue_id: str) -> None:
        super().__init__(f"no captured message {queue_id[:40]!r} (see `mailrelay inbox list`)")
        self.queue_id = queue_id


class NotSandbox(NoSuchCapture):
    def __init__(self, queue_id: str) -> None:
        LookupError.__init__(self, f"{queue_id[:40]!r} is received mail, not a sandbox capture: "
                                   "only captured messages can be released")
        self.queue_id = queue_id


SANDBOX = "sandbox"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    id: str
    account: str
    mail_from: str
    recipients: tuple[str, ...]  # the captured ones (received mail: all of them)
    subject: str | None
    size: int
    signed: bool  # a DKIM signature was made at capture
    created_at: float
    kind: str = SANDBOX  # SANDBOX, or inbound.mailbox.Mailbox.kind for received mail


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    entry: InboxEntry
    signature: bytes  # DKIM-Signature fields made at capture (b"": unsigned)
    data: bytes  # trace headers + body, as stored

    @property
    def raw(self) -> bytes:
        """What delivery would have sent: the signature prefix, then the stored message with no
        line over 998 octets (`fit_lines`, as delivery sends and signs it)."""
        return self.signature + fit_lines(self.data)


M = TypeVar("M")

_IS_CAPTURED = sa.exists().where(recipients.c.message_id == messages.c.id, recipients.c.status == CAPTURED)
_ENTRY_COLS = (messages.c.id, accounts.c.name.label("account"), messages.c.mail_from, messages.c.subject,
               messages.c.size, messages.c.signature.is_not(None).label("signed"), messages.c.created_at)


class MessageBox(Generic[M]):
    """An account-scoped view over the stored messages a subclass selects."""

    kind: ClassVar[str]  # InboxEntry.kind of its entries
    selects: ClassVar[sa.ColumnElement[bool]]  # which messages are in the box
    listed: ClassVar[tuple[str, ...]]  # statuses of the recipients an entry lists
    waiting: ClassVar[tuple[str, ...]]  # a recipient in one of these keeps its message from `clear`

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def _message(self, entry: InboxEntry, row: Any) -> M:
        """The message `get` returns, from its entry and its stored row."""
        raise NotImplementedError

    @staticmethod
    def _scope(conn: Connection, account: str | None) -> builtins.list[sa.ColumnElement[bool]]:
        """Messages of `account` if given."""
        if account is None:
            return []
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).scalar()
        if account_id is None:
            raise AccountError(f"no account named {account[:80]!r}")
        return [messages.c.account_id == account_id]

    def _where(self, conn: Connection, account: str | None) -> builtins.list[sa.ColumnElement[bool]]:
        return [self.selects, *self._scope(conn, account)]

    def _entries(self, conn: Connection, rows: Sequence[Any]) -> builtins.list[InboxEntry]:
        ids = [r.id for r in rows]
        to: dict[str, builtins.list[str]] = {}
        if ids:
            for r in conn.execute(sa.select(recipients.c.message_id, recipients.c.address)
                                  .where(recipients.c.message_id.in_(ids), recipients.c.status.in_(self.listed))
                                  .order_by(recipients.c.id)):
                to.setdefault(r.message_id, []).append(r.address)
        return [InboxEntry(r.id, r.account, r.mail_from, tuple(to.get(r.id, ())), r.subject, r.size,
                           bool(r.signed), r.created_at, self.kind) for r in rows]

    def list(self, *, account: str | None = None, search: str | None = None, limit: int = 100,
             ) -> builtins.list[InboxEntry]:
        """Newest first. `search` (case-insensitive) looks in the subject, the envelope sender and
        recipients, and the raw message: header fields and body as stored (encoded parts such
        as base64 are not decoded)."""
        query = (sa.select(*_ENTRY_COLS).join(accounts, accounts.c.id == messages.c.account_id)
                 .order_by(messages.c.created_at.desc(), messages.c.id.desc()))
        with self._engine.connect() as conn:
            query = query.where(*self._where(conn, account))
            if not search:
                return self._entries(conn, conn.execute(query.limit(limit)).all())
            needle = search.lower()
            found: builtins.list[InboxEntry] = []
            offset = 0
            while len(found) < limit:
                page = self._entries(conn, conn.execute(query.limit(SEARCH_PAGE).offset(offset)).all())
                if not page:
                    break
                offset += len(page)
                found += [e for e in page if self._meta_matches(e, needle)]
                rest = [e for e in page if not self._meta_matches(e, needle)]
                found += self._body_matches(conn, rest, needle.encode())
                found.sort(key=lambda e: (e.created_at, e.id), reverse=True)
            return found[:limit]

    @staticmethod
    def _meta_matches(e: InboxEntry, needle: str) -> bool:
        return any(needle in (v or "").lower() for v in (e.subject, e.mail_from, *e.recipients))

    @staticmethod
    def _body_matches(conn: Connection, entries: builtins.list[InboxEntry], needle: bytes,
                      ) -> builtins.list[InboxEntry]:
        if not entries:
            return []
        by_id = {e.id: e for e in entries}
        hits = {qid for qid, content in bodies.load(conn, by_id).items()
                if needle in content.body.lower() or needle in content.trace_headers.lower()}
        return [e for e in entries if e.id in hits]

    def count(self, *, account: str | None = None) -> int:
        with self._engine.connect() as conn:
            where = self._where(conn, account)
            return int(conn.execute(sa.select(sa.func.count()).select_from(messages).where(*where)).scalar_one())

    def get(self, queue_id: str, *, account: str | None = None) -> M:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(*_ENTRY_COLS, messages.c.signature, *bodies.CONTENT_COLUMNS, messages.c.auth)
                .select_from(bodies.with_content(messages.join(accounts, accounts.c.id == messages.c.account_id)))
                .where(messages.c.id == queue_id, *self._where(conn, account))).first()
            if row is None:
                raise NoSuchCapture(queue_id)
            [entry] = self._entries(conn, [row])
        return self._message(entry, row)

    def clear(self, *, account: str | None = None, now: float, dry_run: bool = False) -> int:
        """Delete the box's messages (of `account`, or all) but those with a recipient still
        `waiting` (left for next time); returns how many."""
        waiting = sa.exists().where(recipients.c.message_id == messages.c.id,
                                    recipients.c.status.in_(self.waiting))
        with self._engine.begin() as conn:
            rows = conn.execute(sa.select(messages.c.id, messages.c.account_id)
                                .where(*self._where(conn, account), sa.not_(waiting))).all()
            if dry_run or not rows:
                return len(rows)
            ids = [r.id for r in rows]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                # Children first: correct even where SQLite's foreign_keys pragma is off.
                conn.execute(attempts.delete().where(attempts.c.message_id.in_(chunk)))
                conn.execute(recipients.delete().where(recipients.c.message_id.in_(chunk)))
                conn.execute(message_categories.delete().where(message_categories.c.message_id.in_(chunk)))
                bodies.delete(conn, chunk)
                conn.execute(messages.delete().where(messages.c.id.in_(chunk)))
            add_events(conn, [{"account_id": r.account_id, "message_id": r.id, "recipient": None,
                               "type": EV_DELETED_BY_OPERATOR, "detail": "inbox clear", "at": now} for r in rows])
        return len(rows)


class Inbox(MessageBox[CapturedMessage]):
    """Sandbox captures. `clear` leaves a message with a recipient still pending delivery."""

    kind = SANDBOX
    selects = _IS_CAPTURED
    listed = (CAPTURED,)
    waiting = PENDING

    def _message(self, entry: InboxEntry, row: Any) -> CapturedMessage:
        return CapturedMessage(entry, bytes(row.signature or b""), bodies.Content.of(row).data)

    def release(self, queue_id: str, *, account: str | None = None, now: float) -> builtins.list[str]:
        """Send a captured message for real: its captured recipients are queued, due now, and
        the message is no longer a sandbox one (the delivery agent signs it afresh). Returns the
        released addresses, each with a `released` event."""
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(messages.c.id, messages.c.account_id, messages.c.direction)
                               .where(messages.c.id == queue_id, sa.or_(_IS_CAPTURED, messages.c.direction == "in"),
                                      *self._scope(conn, account))).first()
            if row is None:
                raise NoSuchCapture(queue_id)
            if row.direction == "in":
                raise NotSandbox(queue_id)
            r = recipients
            rcpts = conn.execute(sa.select(r.c.id, r.c.address).where(r.c.message_id == queue_id,
                                                                      r.c.status == CAPTURED)).all()
            # The status in the WHERE: of two concurrent releases, only one moves each recipient.
            conn.execute(r.update().where(r.c.id.in_([x.id for x in rcpts]), r.c.status == CAPTURED).values(
                status=QUEUED, next_attempt_at=now, last_reply=None, lease_owner=None, lease_until=None,
                updated_at=now))
            conn.execute(messages.update().where(messages.c.id == queue_id).values(sandbox=False, signature=None))
            add_events(conn, [{"account_id": row.account_id, "message_id": queue_id, "recipient": x.address,
                               "type": EV_RELEASED, "detail": "released from the sandbox inbox for delivery",
                               "at": now} for x in rcpts])
        return [x.address for x in rcpts]
