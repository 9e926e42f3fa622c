"""SendGrid's dynamic templates: `/v3/templates` and their versions (accounts.templates).

A version's subject, HTML and plain text are compiled when saved (submission.handlebars), so a
template that would fail at send time is refused with 400 and the field at once. Everything is
looked up with the caller's account id: another account's template or version is 404. Handlers
are plain `def`: FastAPI runs their database work (and compiling) in its thread pool.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from mailrelay.accounts.templates import MAX_NAME, MAX_SUBJECT, Template, TemplateError, TemplateService, Version
from mailrelay.http.auth import Caller, needs, services
from mailrelay.http.errors import APIError, Problem
from mailrelay.submission import handlebars
from mailrelay.submission import v3errors as E
from mailrelay.submission.v3errors import MailSendError, field_error
from mailrelay.submission.v3mime import Renderer

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such template or version of this account"}}
router = APIRouter(tags=["templates"])

_ID = r"^[A-Za-z0-9-]+$"  # our ids: "d-" and hex, UUIDs
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # no database stores these in text


def _storable(value: str) -> str:
    if _BAD_TEXT.search(value):
        raise ValueError("must not contain NUL or unpaired surrogates")
    return value


TemplateId = Annotated[str, Path(max_length=64, pattern=_ID)]
VersionId = Annotated[str, Path(max_length=64, pattern=_ID)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_storable)]
Subject = Annotated[str, Field(max_length=MAX_SUBJECT), AfterValidator(_storable)]
Text = Annotated[str, Field(max_length=handlebars.MAX_SOURCE), AfterValidator(_storable)]


def _service(request: Request) -> TemplateService:
    return TemplateService(services(request).engine)  # stateless over the engine: cheap


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))  # SendGrid's updated_at


def version_body(account_id: int, v: Version) -> dict[str, Any]:
    return {"id": v.id, "user_id": account_id, "template_id": v.template_id, "active": int(v.active),
            "name": v.name, "subject": v.subject, "html_content": v.html_content,
            "plain_content": v.plain_content, "generate_plain_content": False, "editor": v.editor,
            "thumbnail_url": "", "updated_at": _when(v.updated_at)}


def template_body(account_id: int, t: Template) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "generation": t.generation, "updated_at": _when(t.updated_at),
            "versions": [version_body(account_id, v) for v in t.versions]}


def _not_found() -> APIError:
    return APIError(404, "not found")


def _check_texts(fields: dict[str, Any]) -> None:
    """Compile what will be rendered: a template that cannot is refused now, with its field."""
    problems = []
    for name in ("subject", "html_content", "plain_content"):
        text = fields.get(name)
        if text:
            try:
                handlebars.compile_template(text)
            except handlebars.TemplateError as exc:
                problems.append(Problem(str(exc), name))
    if problems:
        raise APIError(400, problems)


class NewTemplate(BaseModel):
    name: Name
    generation: Literal["legacy", "dynamic"] = "dynamic"


class TemplateName(BaseModel):
    name: Name


class NewVersion(BaseModel):
    name: Name
    subject: Subject = ""
    html_content: Text = ""
    plain_content: Text = ""
    active: Literal[0, 1] | None = None
    editor: Literal["code", "design"] = "code"
    generate_plain_content: bool | None = None  # accepted; plain text is kept as given
    test_data: str | None = Field(None, max_length=100_000)  # accepted, not kept


class VersionChanges(BaseModel):
    name: Name | None = None
    subject: Subject | None = None
    html_content: Text | None = None
    plain_content: Text | None = None
    active: Literal[0, 1] | None = None
    editor: Literal["code", "design"] | None = None
    generate_plain_content: bool | None = None
    test_data: str | None = Field(None, max_length=100_000)


@router.post("/v3/templates", status_code=201, summary="Create a dynamic template")
def create_template(request: Request, body: NewTemplate,
                    who: Annotated[Caller, Depends(needs("templates.create"))]) -> dict[str, Any]:
    if body.generation != "dynamic":
        raise APIError(400, [Problem("only dynamic templates (Handlebars) are supported", "generation")])
    try:
        template = _service(request).create(who.account.id, body.name, body.generation)
    except TemplateError as exc:
        raise APIError(400, [Problem(str(exc), "name")]) from None
    return template_body(who.account.id, template)


@router.get("/v3/templates", summary="List templates")
def list_templates(request: Request, who: Annotated[Caller, Depends(needs("templates.read"))],
                   generations: Annotated[str, Query(max_length=32)] = "dynamic",
                   page_size: Annotated[int | None, Query(ge=1, le=200)] = None,
                   page_token: Annotated[str | None, Query(max_length=64, pattern=_ID)] = None) -> dict[str, Any]:
    wanted = tuple(g.strip() for g in generations.split(",") if g.strip())
    if not wanted or any(g not in ("legacy", "dynamic") for g in wanted):
        raise APIError(400, [Problem("generations must be legacy, dynamic or legacy,dynamic", "generations")])
    size = page_size or 200
    found = _service(request).list(who.account.id, generations=wanted, limit=size, after=page_token)
    result = [template_body(who.account.id, t) for t in found]
    if page_size is None:
        return {"templates": result}  # SendGrid's answer without paging
    meta: dict[str, Any] = {"self": str(request.url), "count": len(result)}
    if len(found) == size:
        meta["next"] = str(request.url.include_query_params(page_token=found[-1].id))
    return {"result": result, "_metadata": meta}


@router.get("/v3/templates/{template_id}", responses=_NOT_FOUND, summary="A template with its versions")
def get_template(request: Request, template_id: TemplateId,
                 who: Annotated[Caller, Depends(needs("templates.read"))]) -> dict[str, Any]:
    template = _service(request).get(who.account.id, template_id)
    if template is None:
        raise _not_found()
    return template_body(who.account.id, template)


@router.patch("/v3/templates/{template_id}", responses=_NOT_FOUND, summary="Rename a template")
def rename_template(request: Request, template_id: TemplateId, body: TemplateName,
                    who: Annotated[Caller, Depends(needs("templates.update"))]) -> dict[str, Any]:
    template = _service(request).rename(who.account.id, template_id, body.name)
    if template is None:
        raise _not_found()
    return template_body(who.account.id, template)


@router.delete("/v3/templates/{template_id}", responses=_NOT_FOUND, status_code=204,
               summary="Delete a template and its versions")
def delete_template(request: Request, template_id: TemplateId,
                    who: Annotated[Caller, Depends(needs("templates.delete"))]) -> Response:
    if not _service(request).delete(who.account.id, template_id):
        raise _not_found()
    return Response(status_code=204)


@router.post("/v3/templates/{template_id}/versions", responses=_NOT_FOUND, status_code=201,
             summary="Create a template version")
def create_version(request: Request, template_id: TemplateId, body: NewVersion,
                   who: Annotated[Caller, Depends(needs("templates.versions.create"))]) -> dict[str, Any]:
    _check_texts(body.model_dump())
    try:
        version = _service(request).add_version(
            who.account.id, template_id, name=body.name, subject=body.subject, html_content=body.html_content,
            plain_content=body.plain_content, active=None if body.active is None else bool(body.active),
            editor=body.editor)
    except TemplateError as exc:
        raise APIError(400, [Problem(str(exc))]) from None
    if version is None:
        raise _not_found()
    return version_body(who.account.id, version)


@router.get("/v3/templates/{template_id}/versions/{version_id}", responses=_NOT_FOUND, summary="A template version")
def get_version(request: Request, template_id: TemplateId, version_id: VersionId,
                who: Annotated[Caller, Depends(needs("templates.versions.read"))]) -> dict[str, Any]:
    version = _service(request).get_version(who.account.id, template_id, version_id)
    if version is None:
        raise _not_found()
    return version_body(who.account.id, version)


@router.patch("/v3/templates/{template_id}/versions/{version_id}", responses=_NOT_FOUND,
               summary="Edit a template version")
def update_version(request: Request, template_id: TemplateId, version_id: VersionId, body: VersionChanges,
                   who: Annotated[Caller, Depends(needs("templates.versions.update"))]) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True, exclude={"generate_plain_content", "test_data"})
    _check_texts(changes)
    version = _service(request).update_version(who.account.id, template_id, version_id, changes)
    if version is None:
        raise _not_found()
    return version_body(who.account.id, version)


@router.delete("/v3/templates/{template_id}/versions/{version_id}", responses=_NOT_FOUND, status_code=204,
               summary="Delete a template version")
def delete_version(request: Request, template_id: TemplateId, version_id: VersionId,
                   who: Annotated[Caller, Depends(needs("templates.versions.delete"))]) -> Response:
    if not _service(request).delete_version(who.account.id, template_id, version_id):
        raise _not_found()
    return Response(status_code=204)


@router.post("/v3/templates/{template_id}/versions/{version_id}/activate", responses=_NOT_FOUND,
             summary="Make a version the one template sends use")
def activate_version(request: Request, template_id: TemplateId, version_id: VersionId,
                     who: Annotated[Caller, Depends(needs("templates.versions.activate.create"))]) -> dict[str, Any]:
    version = _service(request).activate(who.account.id, template_id, version_id)
    if version is None:
        raise _not_found()
    return version_body(who.account.id, version)


def template_renderer(engine: sa.Engine, account_id: int, template_id: str) -> Renderer:
    """For mail send: the renderer of the account's template's active version; MailSendError on
    `template_id` (SendGrid's text) when the account has no such template or no active version."""
    ours = re.fullmatch(r"[A-Za-z0-9-]{1,64}", template_id)  # another text names no template (nor reaches the db)
    template = TemplateService(engine).get(account_id, template_id) if ours else None
    version = template.active if template is not None else None
    if version is None:
        raise MailSendError([field_error(E.TEMPLATE_UNKNOWN.format(value=template_id), "template_id",
                                         "message.template_id")])
    return handlebars.renderer(template_id, version.subject, version.html_content, version.plain_content)
