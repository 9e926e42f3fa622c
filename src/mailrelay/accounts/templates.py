"""An account's dynamic templates and their versions (SendGrid's transactional templates).

A template has an id of SendGrid's form ("d-" and 32 hex digits), a name and versions; a
version (id: a UUID) holds a subject, HTML and plain text in Handlebars. At most one version of
a template is active, the one mail sent with its `template_id` is made from; the first version
of a template becomes active, as at SendGrid. Every lookup is by account: another account's
template or version is not found (None), never shown.
"""

from __future__ import annotations

import builtins
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.store.schema import template_versions, templates

MAX_NAME = 100
MAX_SUBJECT = 255
MAX_TEMPLATES = 300  # per account, as SendGrid's limit on versions (each template has some)
MAX_VERSIONS = 300  # per account


class TemplateError(Exception):
    """A request the templates cannot take; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    template_id: str
    name: str
    subject: str
    html_content: str
    plain_content: str
    active: bool
    editor: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    name: str
    generation: str
    updated_at: float
    versions: tuple[Version, ...] = ()

    @property
    def active(self) -> Version | None:
        return next((v for v in self.versions if v.active), None)


def _version(row: Any) -> Version:
    return Version(row.id, row.template_id, row.name, row.subject, row.html_content, row.plain_content,
                   bool(row.active), row.editor, row.updated_at)


class TemplateService:
    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    # --- templates ---

    def create(self, account_id: int, name: str, generation: str = "dynamic") -> Template:
        now = self._clock()
        tid = "d-" + secrets.token_hex(16) if generation == "dynamic" else str(uuid.uuid4())
        with self._engine.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(templates)
                                 .where(templates.c.account_id == account_id)).scalar_one()
            if count >= MAX_TEMPLATES:
                raise TemplateError(f"an account can have at most {MAX_TEMPLATES} templates")
            conn.execute(templates.insert().values(id=tid, account_id=account_id, name=name, generation=generation,
                                                   created_at=now, updated_at=now))
        return Template(tid, name, generation, now)

    def list(self, account_id: int, *, generations: tuple[str, ...] = ("legacy", "dynamic"),
             limit: int = 200, after: str | None = None) -> builtins.list[Template]:
        t = templates.c
        query = (sa.select(templates).where(t.account_id == account_id, t.generation.in_(generations))
                 .order_by(t.id).limit(limit))
        if after:
            query = query.where(t.id > after)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            versions = self._versions(conn, [r.id for r in rows])
        return [Template(r.id, r.name, r.generation, r.updated_at, versions.get(r.id, ())) for r in rows]

    def get(self, account_id: int, template_id: str) -> Template | None:
        with self._engine.connect() as conn:
            return self._get(conn, account_id, template_id)

    def rename(self, account_id: int, template_id: str, name: str) -> Template | None:
        with self._engine.begin() as conn:
            result = conn.execute(templates.update().where(templates.c.id == template_id,
                                                           templates.c.account_id == account_id)
                                  .values(name=name, updated_at=self._clock()))
            return self._get(conn, account_id, template_id) if result.rowcount else None

    def delete(self, account_id: int, template_id: str) -> bool:
        with self._engine.begin() as conn:
            if self._get(conn, account_id, template_id) is None:
                return False
            conn.execute(template_versions.delete().where(template_versions.c.template_id == template_id))
            conn.execute(templates.delete().where(templates.c.id == template_id))
            return True

    # --- versions ---

    def add_version(self, account_id: int, template_id: str, *, name: str, subject: str = "",
                    html_content: str = "", plain_content: str = "", active: bool | None = None,
                    editor: str = "code") -> Version | None:
        now = self._clock()
        vid = str(uuid.uuid4())
        with self._engine.begin() as conn:
            template = self._get(conn, account_id, template_id)
            if template is None:
                return None
            used = conn.execute(sa.select(sa.func.count()).select_from(template_versions.join(templates))
                                .where(templates.c.account_id == account_id)).scalar_one()
            if used >= MAX_VERSIONS:
                raise TemplateError(f"an account can have at most {MAX_VERSIONS} template versions")
            make_active = bool(active) or (active is None and not template.versions)
            if make_active:
                self._deactivate(conn, template_id, now)
            conn.execute(template_versions.insert().values(
                id=vid, template_id=template_id, name=name, subject=subject, html_content=html_content,
                plain_content=plain_content, active=make_active, editor=editor, created_at=now, updated_at=now))
            conn.execute(templates.update().where(templates.c.id == template_id).values(updated_at=now))
        return Version(vid, template_id, name, subject, html_content, plain_content, make_active, editor, now)

    def get_version(self, account_id: int, template_id: str, version_id: str) -> Version | None:
        with self._engine.connect() as conn:
            return self._get_version(conn, account_id, template_id, version_id)

    def update_version(self, account_id: int, template_id: str, version_id: str,
                       changes: dict[str, Any]) -> Version | None:
        """Change the given fields (name, subject, html_content, plain_content, editor, active)."""
        allowed = {k: v for k, v in changes.items()
                   if k in ("name", "subject", "html_content", "plain_content", "editor")}
        now = self._clock()
        with self._engine.begin() as conn:
            if self._get_version(conn, account_id, template_id, version_id) is None:
                return None
            if changes.get("active"):
                self._deactivate(conn, template_id, now)
                allowed["active"] = True
            elif "active" in changes and changes["active"] is not None:
                allowed["active"] = False
            conn.execute(template_versions.update().where(template_versions.c.id == version_id)
                         .values(**allowed, updated_at=now))
            return self._get_version(conn, account_id, template_id, version_id)

    def activate(self, account_id: int, template_id: str, version_id: str) -> Version | None:
        return self.update_version(account_id, template_id, version_id, {"active": True})

    def delete_version(self, account_id: int, template_id: str, version_id: str) -> bool:
        with self._engine.begin() as conn:
            if self._get_version(conn, account_id, template_id, version_id) is None:
                return False
            conn.execute(template_versions.delete().where(template_versions.c.id == version_id))
            return True

    # --- helpers ---

    def _get(self, conn: Connection, account_id: int, template_id: str) -> Template | None:
        row = conn.execute(sa.select(templates).where(templates.c.id == template_id,
                                                      templates.c.account_id == account_id)).first()
        if row is None:
            return None
        return Template(row.id, row.name, row.generation, row.updated_at,
                        self._versions(conn, [row.id]).get(row.id, ()))

    def _get_version(self, conn: Connection, account_id: int, template_id: str, version_id: str) -> Version | None:
        v = template_versions.c
        row = conn.execute(sa.select(template_versions).join(templates)
                           .where(v.id == version_id, v.template_id == template_id,
                                  templates.c.account_id == account_id)).first()
        return None if row is None else _version(row)

    def _versions(self, conn: Connection, ids: builtins.list[str]) -> dict[str, tuple[Version, ...]]:
        if not ids:
            return {}
        v = template_versions.c
        out: dict[str, builtins.list[Version]] = {}
        for row in conn.execute(sa.select(template_versions).where(v.template_id.in_(ids))
                                .order_by(v.created_at, v.id)):
            out.setdefault(row.template_id, []).append(_version(row))
        return {k: tuple(vs) for k, vs in out.items()}

    def _deactivate(self, conn: Connection, template_id: str, now: float) -> None:
        conn.execute(template_versions.update()
                     .where(template_versions.c.template_id == template_id, template_versions.c.active.is_(True))
                     .values(active=False, updated_at=now))
