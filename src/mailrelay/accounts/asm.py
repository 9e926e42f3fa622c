"""Unsubscribe groups (SendGrid's ASM): named kinds of mail a recipient can leave one by one.

A group belongs to one account and every lookup takes that account's id, so another account's
group id finds nothing. An address in a group's suppressions has left that group only; the
account's global unsubscribe list (accounts.suppressions, kind "unsubscribes") covers all mail.
At most one group per account is the default: making one default clears the flag on the others.

Exceptions:

    AccountError                 (accounts.service) a user mistake
     └── GroupError              bad name or description, too many groups
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailrelay.accounts.service import AccountError
from mailrelay.accounts.suppressions import BATCH, normalize_address
from mailrelay.core.text import has_control_chars
from mailrelay.store.schema import asm_groups, asm_suppressions

MAX_NAME = 30  # SendGrid's limits
MAX_DESCRIPTION = 100
MAX_GROUPS = 200  # per account, as SendGrid allows


class GroupError(AccountError):
    """A user mistake about unsubscribe groups; `field` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    description: str
    is_default: bool
    unsubscribes: int  # addresses that left the group
    created_at: float


def _text(value: str, field: str, limit: int, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise GroupError(f"{field} is required", field)
    if len(value) > limit:
        raise GroupError(f"{field} is too long: at most {limit} characters", field)
    if has_control_chars(value):
        raise GroupError(f"{field} must not contain control characters", field)
    return value


_COUNT = (sa.select(sa.func.count()).select_from(asm_suppressions)
          .where(asm_suppressions.c.group_id == asm_groups.c.id).scalar_subquery())
_COLS = (asm_groups.c.id, asm_groups.c.name, asm_groups.c.description, asm_groups.c.is_default,
         _COUNT.label("unsubscribes"), asm_groups.c.created_at)


def _group(row: Any) -> Group:
    return Group(id=int(row.id), name=row.name, description=row.description, is_default=bool(row.is_default),
                 unsubscribes=int(row.unsubscribes), created_at=row.created_at)


class GroupService:
    """Unsubscribe groups and their suppressions on SQLAlchemy Core (SQLite and PostgreSQL)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def create(self, account_id: int, name: str, description: str = "", is_default: bool = False) -> Group:
        name = _text(name, "name", MAX_NAME, required=True)
        description = _text(description, "description", MAX_DESCRIPTION, required=False)
        with self._engine.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(asm_groups)
                                 .where(asm_groups.c.account_id == account_id)).scalar_one()
            if count >= MAX_GROUPS:
                raise GroupError(f"at most {MAX_GROUPS} unsubscribe groups per account")
            _check_name_free(conn, account_id, name)
            if is_default:
                _clear_default(conn, account_id)
            group_id = conn.execute(asm_groups.insert().values(
                account_id=account_id, name=name, description=description, is_default=is_default,
                created_at=self._clock()).returning(asm_groups.c.id)).scalar_one()
            return _one(conn, account_id, int(group_id))

    def groups(self, account_id: int, ids: Iterable[int] = ()) -> list[Group]:
        """The account's groups by id (only those in `ids` if any are given)."""
        query = sa.select(*_COLS).where(asm_groups.c.account_id == account_id).order_by(asm_groups.c.id)
        wanted = sorted(set(ids))
        if wanted:
            query = query.where(asm_groups.c.id.in_(wanted[:BATCH]))
        with self._engine.connect() as conn:
            return [_group(r) for r in conn.execute(query)]

    def group(self, account_id: int, group_id: int) -> Group | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*_COLS).where(asm_groups.c.account_id == account_id,
                                                       asm_groups.c.id == group_id)).first()
        return _group(row) if row else None

    def update(self, account_id: int, group_id: int, *, name: str | None = None,
               description: str | None = None, is_default: bool | None = None) -> Group | None:
        """Change the given fields; None if the account has no such group."""
        values: dict[str, object] = {}
        if name is not None:
            values["name"] = _text(name, "name", MAX_NAME, required=True)
        if description is not None:
            values["description"] = _text(description, "description", MAX_DESCRIPTION, required=False)
        if is_default is not None:
            values["is_default"] = is_default
        with self._engine.begin() as conn:
            if not _exists(conn, account_id, group_id):
                return None
            if "name" in values:
                _check_name_free(conn, account_id, str(values["name"]), but=group_id)
            if is_default:
                _clear_default(conn, account_id)
            if values:
                conn.execute(asm_groups.update().where(asm_groups.c.id == group_id).values(**values))
            return _one(conn, account_id, group_id)

    def delete(self, account_id: int, group_id: int) -> bool:
        with self._engine.begin() as conn:
            if not _exists(conn, account_id, group_id):
                return False
            conn.execute(asm_suppressions.delete().where(asm_suppressions.c.group_id == group_id))
            conn.execute(asm_groups.delete().where(asm_groups.c.id == group_id))
        return True

    # -- a group's suppressions ----------------------------------------------------------------

    def add(self, account_id: int, group_id: int, addresses: Iterable[str]) -> list[str] | None:
        """Add `addresses` to the group's suppressions (those already there stay as they were);
        returns them normalized, or None if the account has no such group."""
        wanted = sorted({normalize_address(a) for a in addresses})
        now = self._clock()
        with self._engine.begin() as conn:
            if not _exists(conn, account_id, group_id):
                return None
            present: set[str] = set()
            for i in range(0, len(wanted), BATCH):
                present.update(conn.execute(sa.select(asm_suppressions.c.address).where(
                    asm_suppressions.c.group_id == group_id,
                    asm_suppressions.c.address.in_(wanted[i:i + BATCH]))).scalars())
            new = [{"group_id": group_id, "address": a, "created_at": now} for a in wanted if a not in present]
            if new:
                conn.execute(asm_suppressions.insert(), new)
        return wanted

    def members(self, account_id: int, group_id: int) -> list[str] | None:
        """The group's suppressed addresses, or None if the account has no such group."""
        with self._engine.connect() as conn:
            if not _exists(conn, account_id, group_id):
                return None
            return list(conn.execute(sa.select(asm_suppressions.c.address).where(
                asm_suppressions.c.group_id == group_id).order_by(asm_suppressions.c.address)).scalars())

    def remove(self, account_id: int, group_id: int, address: str) -> bool | None:
        """Take `address` out of the group's suppressions: whether it was in, None if no group."""
        address = normalize_address(address)
        with self._engine.begin() as conn:
            if not _exists(conn, account_id, group_id):
                return None
            gone = conn.execute(asm_suppressions.delete().where(
                asm_suppressions.c.group_id == group_id, asm_suppressions.c.address == address)
                .returning(asm_suppressions.c.id)).first()
        return gone is not None

    def all_suppressions(self, account_id: int, limit: int = 10_000) -> list[tuple[str, float, Group]]:
        """Every (address, when it left, group) of the account's groups, by address then group id."""
        member = asm_suppressions.alias("member")  # not the table _COUNT counts, so it correlates to the group
        query = (sa.select(member.c.address, member.c.created_at.label("left_at"), *_COLS)
                 .join(asm_groups, asm_groups.c.id == member.c.group_id)
                 .where(asm_groups.c.account_id == account_id)
                 .order_by(member.c.address, asm_groups.c.id).limit(limit))
        with self._engine.connect() as conn:
            return [(r.address, r.left_at, _group(r)) for r in conn.execute(query)]

    def memberships(self, account_id: int, address: str) -> list[tuple[Group, bool]]:
        """Each of the account's groups, and whether `address` left it."""
        address = normalize_address(address)
        left = (sa.select(asm_suppressions.c.id).where(asm_suppressions.c.group_id == asm_groups.c.id,
                                                       asm_suppressions.c.address == address).exists())
        query = (sa.select(*_COLS, left.label("left")).where(asm_groups.c.account_id == account_id)
                 .order_by(asm_groups.c.id))
        with self._engine.connect() as conn:
            return [(_group(r), bool(r.left)) for r in conn.execute(query)]

    def suppressed_in_group(self, account_id: int, group_id: int, addresses: Iterable[str]) -> set[str]:
        """Those of `addresses` (as given, any case) that left the account's group `group_id`."""
        by_lower: dict[str, list[str]] = {}
        for a in addresses:
            by_lower.setdefault(a.lower(), []).append(a)
        keys = list(by_lower)
        found: set[str] = set()
        with self._engine.connect() as conn:
            if not keys or not _exists(conn, account_id, group_id):
                return found
            for i in range(0, len(keys), BATCH):
                for address in conn.execute(sa.select(asm_suppressions.c.address).where(
                        asm_suppressions.c.group_id == group_id,
                        asm_suppressions.c.address.in_(keys[i:i + BATCH]))).scalars():
                    found.update(by_lower.get(address, ()))
        return found


def _exists(conn: sa.Connection, account_id: int, group_id: int) -> bool:
    return conn.execute(sa.select(asm_groups.c.id).where(
        asm_groups.c.account_id == account_id, asm_groups.c.id == group_id)).first() is not None


def _one(conn: sa.Connection, account_id: int, group_id: int) -> Group:
    return _group(conn.execute(sa.select(*_COLS).where(asm_groups.c.account_id == account_id,
                                                        asm_groups.c.id == group_id)).one())


def _check_name_free(conn: sa.Connection, account_id: int, name: str, but: int | None = None) -> None:
    query = sa.select(asm_groups.c.id).where(asm_groups.c.account_id == account_id, asm_groups.c.name == name)
    if but is not None:
        query = query.where(asm_groups.c.id != but)
    if conn.execute(query).first() is not None:
        raise GroupError(f"an unsubscribe group named {name!r} already exists", "name")


def _clear_default(conn: sa.Connection, account_id: int) -> None:
    conn.execute(asm_groups.update().where(asm_groups.c.account_id == account_id,
                                           asm_groups.c.is_default.is_(True)).values(is_default=False))
