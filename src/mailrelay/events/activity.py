"""Email activity: an account's sent messages per recipient, searched with SendGrid's query
syntax, and one message with its events.

The query language is a strict subset of SendGrid's: `field="value"` for to_email, from_email,
subject, status and msg_id, and `last_event_time BETWEEN TIMESTAMP "..." AND TIMESTAMP "..."`,
joined by AND. Anything else is refused with what was not understood, never silently ignored.
A `msg_id` is SendGrid's sg_message_id: "<X-Message-Id>.<queue id>" for mail sent through the
API, else the queue id. Every query starts from the caller's account and is bounded by a limit;
newest first is the queue id's order (queue ids sort by time).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mailrelay.core import status
from mailrelay.core.ids import queue_id_floor
from mailrelay.events.payload import status_of
from mailrelay.store.schema import SUBJECT_KEY, events, message_categories, messages, recipients, subject_key

MAX_LIMIT = 1000
MAX_QUERY = 2000  # characters
MAX_EVENTS = 500  # of one message
FIELDS = ("to_email", "from_email", "subject", "status", "msg_id")
STATUSES = {
    "delivered": (status.DELIVERED,),
    "not_delivered": (status.BOUNCED, status.EXPIRED, status.DROPPED),
    "processing": (status.QUEUED, status.DEFERRED, status.CAPTURED),
}
_OUTBOUND_EVENTS = (status.EV_PROCESSED, status.DEFERRED, status.DELIVERED, status.BOUNCED, status.EXPIRED,
                    status.EV_BOUNCED_BY_OPERATOR, status.DROPPED, status.CAPTURED, status.EV_RELEASED)

_STRING = r'"((?:[^"\\]|\\.)*)"'
_EQUALS = re.compile(r"\s*([A-Za-z_]+)\s*=\s*" + _STRING + r"\s*")
_BETWEEN = re.compile(r"\s*last_event_time\s+BETWEEN\s+TIMESTAMP\s+" + _STRING
                      + r"\s+AND\s+TIMESTAMP\s+" + _STRING + r"\s*", re.IGNORECASE)
_AND = re.compile(r"AND\b", re.IGNORECASE)


class QueryError(ValueError):
    """A query this server does not support or cannot read (the message says which part)."""


@dataclass(slots=True)
class Search:
    """What to find. `equals` holds the API's fields (and `category`, the dashboard's); `after`
    and `before` bound last_event_time (the API's BETWEEN), `sent_from` and `sent_before` the
    time the message was accepted, which the queue id carries, so they bound the index range."""

    equals: dict[str, str] = field(default_factory=dict)
    after: float | None = None  # last_event_time, inclusive, epoch seconds
    before: float | None = None
    sent_from: float | None = None  # accepted at or after, epoch seconds
    sent_before: float | None = None  # accepted before


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _timestamp(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise QueryError(f"not a timestamp: {text!r} (use 2024-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_query(text: str) -> Search:
    """A Search from SendGrid's query syntax; QueryError names what is not supported."""
    if len(text) > MAX_QUERY:
        raise QueryError(f"the query is longer than {MAX_QUERY} characters")
    search = Search()
    pos = 0
    while True:
        between = _BETWEEN.match(text, pos)
        if between:
            if search.after is not None:
                raise QueryError("last_event_time is given twice")
            search.after = _timestamp(_unescape(between.group(1)))
            search.before = _timestamp(_unescape(between.group(2)))
            pos = between.end()
        else:
            equals = _EQUALS.match(text, pos)
            if not equals:
                rest = text[pos:].strip()[:60]
                raise QueryError(f"unsupported query at {rest!r}: only field=\"value\" for "
                                 f"{', '.join(FIELDS)} and last_event_time BETWEEN TIMESTAMP \"...\" AND "
                                 f"TIMESTAMP \"...\", joined by AND, are supported")
            name, value = equals.group(1), _unescape(equals.group(2))
            if name not in FIELDS:
                raise QueryError(f"unsupported query field {name!r} (supported: {', '.join(FIELDS)}, "
                                 f"last_event_time)")
            if name in search.equals:
                raise QueryError(f"{name} is given twice")
            if name == "status" and value not in STATUSES:
                raise QueryError(f"unsupported status {value!r} (supported: {', '.join(STATUSES)})")
            search.equals[name] = value
            pos = equals.end()
        if pos >= len(text):
            return search
        joined = _AND.match(text, pos)
        if not joined:
            raise QueryError(f"unsupported query at {text[pos:].strip()[:60]!r}: conditions are joined by AND")
        pos = joined.end()


def _tags(raw: str | None) -> dict[str, Any]:
    try:
        tags = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return tags if isinstance(tags, dict) else {}


def msg_id(queue_id: str, tags: dict[str, Any]) -> str:
    """SendGrid's sg_message_id of one of our messages (as events.payload writes it)."""
    xid = tags.get("x_message_id")
    return f"{xid}.{queue_id}" if isinstance(xid, str) and xid else queue_id


def split_msg_id(value: str) -> tuple[str | None, str]:
    """(X-Message-Id or None, queue id) of a msg_id."""
    xid, dot, queue_id = value.rpartition(".")
    return (xid, queue_id) if dot else (None, value)


def _status(recipient_status: str) -> str:
    for name, statuses in STATUSES.items():
        if recipient_status in statuses:
            return name
    return "processing"


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(row: Any) -> dict[str, Any]:
    return {"from_email": row.mail_from, "msg_id": msg_id(row.id, _tags(row.tags)), "subject": row.subject or "",
            "to_email": row.address, "status": _status(row.status), "opens_count": 0, "clicks_count": 0,
            "last_event_time": iso(row.updated_at)}


_COLUMNS = (messages.c.id, messages.c.mail_from, messages.c.subject, messages.c.tags, messages.c.client_ip,
            recipients.c.address, recipients.c.status, recipients.c.updated_at, recipients.c.id.label("rid"))


def _base(account_id: int, owner: sa.ColumnElement[int] | None = None, dialect: str = "") -> sa.Select[Any]:
    # `owner`: the account id column of the table whose index leads, when not messages' (it has
    # the message's account, written with it). The messages' account is compared to it, not to
    # the number, so no planner starts from the account's messages and sorts them. SQLite would
    # carry the number over from `owner` all the same; `+ 0` stops that (SQLite plans without
    # statistics), while PostgreSQL needs the bare column to estimate how many rows it keeps.
    if owner is None:
        mine = messages.c.account_id == account_id
    else:
        mine = (messages.c.account_id + 0 if dialect == "sqlite" else messages.c.account_id) == owner
    return (sa.select(*_COLUMNS)
            .select_from(messages.join(recipients, recipients.c.message_id == messages.c.id))
            .where(mine, messages.c.direction == "out"))


@dataclass(frozen=True, slots=True)
class Cursor:
    """A place in the newest-first order: a row's queue id (it sorts by the time the message
    was accepted) and its recipient id. Pages go on from it; never by OFFSET, which reads and
    throws away every row before the page."""

    queue_id: str
    recipient_id: int

    def __str__(self) -> str:
        return f"{self.queue_id}.{self.recipient_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        queue_id, _, rid = text.partition(".")
        if not QUEUE_ID.fullmatch(queue_id) or not rid.isdigit() or len(rid) > 10 or int(rid) > MAX_ROW_ID:
            return None
        return cls(queue_id, int(rid))


QUEUE_ID = re.compile(r"[0-9A-Z]{16}")
MAX_ROW_ID = 2**31 - 1  # recipients.id is an INTEGER: a larger one in a cursor fails on PostgreSQL


@dataclass(frozen=True, slots=True)
class Page:
    """One page of activity, newest first, with cursors to the pages beside it (None: no more)."""

    rows: list[dict[str, Any]]
    older: Cursor | None
    newer: Cursor | None


def _query(account_id: int, search: Search, *, older_than: Cursor | None = None,
           newer_than: Cursor | None = None, limit: int, dialect: str) -> sa.Select[Any]:
    """The activity query: newest first (oldest first after `newer_than`), at most `limit` rows.

    Each filter reads its own index, which starts with the account and ends with the order
    (queue id, recipient id), so a page costs one index range however many messages the account
    has (store.schema: ix_messages_activity*, ix_recipients_activity_*, message_categories):
    - none, a date range: recipients (account_id, message_id, id);
    - msg_id: the messages' primary key;
    - recipient: recipients (account_id, lower(address), message_id, id);
    - subject: messages (account_id, direction, substr(subject, 1, 200), id), exact match;
    - sender: messages (account_id, direction, lower(mail_from), id);
    - category: message_categories (account_id, category, message_id);
    - status: recipients (account_id, status, message_id, id), one range per status of the
      group, merged (UNION ALL of ordered parts: no sort of the account's rows).
    One index leads (recipient first, then msg_id, subject or sender, then category, then
    status); the other filters are checked on its rows, so a combination reads the leading
    range until the page is full (all of it when nothing matches). The sent-time range is a
    range of queue ids, so it narrows whichever index leads.
    """
    eq = search.equals
    statuses = STATUSES.get(eq.get("status", ""), ())
    # With a sender or subject too, PostgreSQL merge-joins each status's range with that
    # filter's (one IN list made it read every recipient of the account); SQLite looks each row
    # up instead, where one IN list is one lookup.
    others = {"to_email", "category"} | ({"from_email", "subject"} if dialect != "postgresql" else set())
    merge = len(statuses) > 1 and not (others & eq.keys())
    ascending = newer_than is not None
    if not merge:
        return _ranged(account_id, search, statuses, older_than=older_than, newer_than=newer_than, limit=limit,
                       dialect=dialect)
    # One ordered range per status of the group, merged: an IN list on the index would need a sort.
    parts = [_ranged(account_id, search, (one,), older_than=older_than, newer_than=newer_than, limit=limit,
                     dialect=dialect)
             .subquery().select() for one in statuses]
    merged = sa.union_all(*parts).subquery()
    order = (merged.c.id.asc(), merged.c.rid.asc()) if ascending else (merged.c.id.desc(), merged.c.rid.desc())
    return sa.select(*merged.c).order_by(*order).limit(limit)


def _ranged(account_id: int, search: Search, statuses: tuple[str, ...], *, older_than: Cursor | None,
            newer_than: Cursor | None, limit: int, dialect: str) -> sa.Select[Any]:
    """`_query` with at most one index leading: rows of `statuses` (all when empty)."""
    eq = search.equals
    # The leading index, and the order's first column on its table (all equal the queue id).
    key: sa.ColumnElement[str] = recipients.c.message_id
    if "to_email" not in eq and {"msg_id", "from_email", "subject"} & eq.keys():
        key = messages.c.id
    elif "to_email" not in eq and "category" in eq:
        key = message_categories.c.message_id
    owner = (recipients.c.account_id if key is recipients.c.message_id
             else message_categories.c.account_id if key is message_categories.c.message_id else None)
    # The recipients' own copy of the account too, whichever table leads: without it PostgreSQL
    # may merge-join the messages with every account's recipients, read from the newest down.
    query = _base(account_id, owner, dialect).where(recipients.c.account_id == account_id)
    if "msg_id" in eq:
        query = query.where(messages.c.id == split_msg_id(eq["msg_id"])[1])  # the primary key
    if "to_email" in eq:
        query = query.where(sa.func.lower(recipients.c.address) == eq["to_email"].lower())
    if "from_email" in eq:
        query = query.where(sa.func.lower(messages.c.mail_from) == eq["from_email"].lower())
    if "subject" in eq:
        subject = eq["subject"]
        query = query.where(subject_key(messages.c.subject) == subject[:SUBJECT_KEY])
        if len(subject) >= SUBJECT_KEY:  # a shorter prefix equal to all of it is the whole subject
            query = query.where(messages.c.subject == subject)
    if "category" in eq:
        query = query.join(message_categories, message_categories.c.message_id == messages.c.id).where(
            message_categories.c.account_id == account_id, message_categories.c.category == eq["category"])
    if len(statuses) == 1:
        query = query.where(recipients.c.status == statuses[0])
    elif statuses:
        query = query.where(recipients.c.status.in_(statuses))
    if search.after is not None and search.before is not None:
        query = query.where(recipients.c.updated_at >= search.after, recipients.c.updated_at <= search.before,
                            messages.c.created_at <= search.before)
    # The queue id bounds go on every table's copy of it: PostgreSQL's merge join reads each
    # side's index from where its own bounds say, not from the other side's.
    sides = [messages.c.id, recipients.c.message_id] + ([message_categories.c.message_id] if "category" in eq else [])
    if search.sent_from is not None:
        query = query.where(*(c >= queue_id_floor(search.sent_from) for c in sides))
    if search.sent_before is not None:
        query = query.where(*(c < queue_id_floor(search.sent_before) for c in sides))
    rid = recipients.c.id
    if older_than is not None:
        query = query.where(*(c <= older_than.queue_id for c in sides),
                            sa.or_(key < older_than.queue_id, rid < older_than.recipient_id))
    if newer_than is not None:
        query = query.where(*(c >= newer_than.queue_id for c in sides),
                            sa.or_(key > newer_than.queue_id, rid > newer_than.recipient_id))
    order = (key.asc(), rid.asc()) if newer_than is not None else (key.desc(), rid.desc())
    return query.order_by(*order).limit(limit)


def search_messages(engine: sa.Engine, account_id: int, search: Search, limit: int) -> list[dict[str, Any]]:
    """The account's sent messages matching `search`, one entry per recipient, newest first."""
    query = _query(account_id, search, limit=max(1, min(limit, MAX_LIMIT)), dialect=engine.dialect.name)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [_summary(r) for r in rows]
    eq = search.equals
    if "msg_id" in eq:  # the X-Message-Id part must match too
        found = [f for f in found if f["msg_id"] == eq["msg_id"]]
    return found


def activity_page(engine: sa.Engine, account_id: int, search: Search, limit: int, *,
                  older_than: Cursor | None = None, newer_than: Cursor | None = None) -> Page:
    """One page of `search_messages` (the dashboard's): after `older_than`, or the page before
    `newer_than`, or the newest; one row more is read to know whether a next page exists."""
    limit = max(1, min(limit, MAX_LIMIT))
    with engine.connect() as conn:
        rows = conn.execute(_query(account_id, search, older_than=older_than, newer_than=newer_than,
                                   limit=limit + 1, dialect=engine.dialect.name)).all()
    more = len(rows) > limit
    rows = list(rows[:limit])
    if newer_than is not None:
        rows.reverse()
    first = Cursor(rows[0].id, rows[0].rid) if rows else None
    last = Cursor(rows[-1].id, rows[-1].rid) if rows else None
    if newer_than is not None:
        older, newer = last, first if more else None
    else:
        older, newer = (last if more else None), (first if older_than is not None else None)
    found = [_summary(r) | {"queue_id": r.id, "recipient_id": r.rid} for r in rows]
    return Page(found, older, newer)


def query_plan(engine: sa.Engine, account_id: int, search: Search, *, older_than: Cursor | None = None,
               newer_than: Cursor | None = None, limit: int = 50) -> list[str]:
    """How the database runs `activity_page`'s query (SQLite EXPLAIN QUERY PLAN, PostgreSQL
    EXPLAIN ANALYZE, which runs it): for the benchmark and the test that keeps the indexes used."""
    query = _query(account_id, search, older_than=older_than, newer_than=newer_than, limit=limit + 1,
                   dialect=engine.dialect.name)
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            params = tuple(compiled.params[k] for k in compiled.positiontup or ())
            return [str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)]
        return [str(r[0]) for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + str(compiled),
                                                        compiled.params)]


def _event(row: Any) -> dict[str, Any]:
    name = status.EVENT_NAMES.get(row.type, row.type)
    out: dict[str, Any] = {"event_name": "bounced" if name == "bounce" else name, "processed": iso(row.at),
                           "reason": None, "attempt_num": row.attempt or 0, "mx_server": row.mx_host,
                           "email": row.recipient}
    reply = row.reply or row.detail or None
    if row.type in (status.BOUNCED, status.EXPIRED, status.EV_BOUNCED_BY_OPERATOR):
        out["reason"] = reply
        out["bounce_type"] = "blocked" if status_of(reply or "").startswith("5.7.") else "bounce"
    elif row.type in (status.DROPPED, status.DEFERRED, status.DELIVERED):
        out["reason"] = reply
    return out


def get_message(engine: sa.Engine, account_id: int, wanted: str) -> dict[str, Any] | None:
    """One sent message of the account, with its events (None: no such message of this account)."""
    xid, queue_id = split_msg_id(wanted)
    with engine.connect() as conn:
        rows = conn.execute(_base(account_id).where(messages.c.id == queue_id).order_by(recipients.c.id)).all()
        if not rows or (xid is not None and msg_id(queue_id, _tags(rows[0].tags)) != wanted):
            return None
        found = conn.execute(
            sa.select(events).where(events.c.message_id == queue_id, events.c.account_id == account_id,
                                    events.c.type.in_(_OUTBOUND_EVENTS))
            .order_by(events.c.id).limit(MAX_EVENTS)).all()
    first = rows[0]
    tags = _tags(first.tags)
    categories = tags.get("category")
    return {**_summary(first), "msg_id": msg_id(queue_id, tags),
            "recipients": [{"to_email": r.address, "status": _status(r.status)} for r in rows],
            "categories": categories if isinstance(categories, list) else [],
            "unique_args": json.dumps(tags["unique_args"]) if isinstance(tags.get("unique_args"), dict) else "",
            "originating_ip": first.client_ip, "template_id": None, "asm_group_id": None, "teammate": "",
            "api_key_id": None, "outbound_ip": None, "outbound_ip_type": None,
            "events": [_event(r) for r in found]}


def latest_activity(engine: sa.Engine, account_id: int) -> int | None:
    """The account's newest event id: a new message (its `processed` event is written with it)
    or any change of a recipient moves it; one MAX on the index (account_id, id)."""
    with engine.connect() as conn:
        newest: int | None = conn.execute(
            sa.select(sa.func.max(events.c.id)).where(events.c.account_id == account_id)).scalar()
    return newest
