"""Errors in SendGrid's shape: `{"errors": [{"message", "field", "help"}]}`, always.

Every refusal of the API goes through `APIError`, and the handlers here turn FastAPI's own
errors (validation, unknown route, wrong method, a crash) into the same shape, so a client
library that reads `errors[0].message` never meets another format.

A database outage met by any route (a key check, a list, a dashboard page) is not a crash:
503 with Retry-After, no traceback, and one log line per outage for the process (its
StorageHealth, shared with the spool writer, which also says when the database is back).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailrelay.store.health import StorageHealth, StorageUnavailable, is_unavailable

log = logging.getLogger("mailrelay.http")

# SendGrid's exact body for a bad, revoked or missing key.
BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
FORBIDDEN = "access forbidden"
# While the database is away: what a client is told, and when to try again (seconds).
UNAVAILABLE = "storage unavailable, try again later"
RETRY_AFTER = "5"
_UNAVAILABLE_PAGE = ("<!doctype html><title>Unavailable</title><p>The database cannot be reached just now. "
                     "This page works again as soon as it is back: try again in a few seconds.</p>")


# The error body in the OpenAPI document: what every route may answer besides its own.
ERROR_BODY: dict[str, Any] = {"type": "object", "required": ["errors"], "properties": {"errors": {
    "type": "array", "items": {"type": "object", "required": ["message"], "properties": {
        "message": {"type": "string"}, "field": {"type": ["string", "null"]},
        "help": {"type": ["string", "null"]}}}}}}
ERRORS_CONTENT: dict[str, Any] = {"application/json": {"schema": ERROR_BODY}}
_EVERY_ROUTE = {"400": "invalid request", "401": "missing, bad or revoked key",
                "403": "the key lacks the route's scope", "413": "request body too large",
                "429": "too many failed keys from this address, or the plan's rate",
                "503": "the database is unavailable; try again after Retry-After seconds"}


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    field: str | None = None
    help: str | None = None


class APIError(Exception):
    def __init__(self, status: int, problems: Sequence[Problem] | str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.problems = [Problem(problems)] if isinstance(problems, str) else list(problems)
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {self.problems[0].message if self.problems else ''}")


def body(problems: Sequence[Problem]) -> dict[str, object]:
    return {"errors": [{"message": p.message, "field": p.field, "help": p.help} for p in problems]}


def response(status: int, problems: Sequence[Problem], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(problems), status_code=status, headers=dict(headers or {}))


def _field(loc: Sequence[int | str]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with our errors: its 422 (we answer 400) gone, and the answers every
    route can give (auth, body limit) listed, each in SendGrid's error shape."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path, operations in getattr(app.state, "openapi_paths", {}).items():
        doc.setdefault("paths", {}).setdefault(path, {}).update(operations)
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code, text in _EVERY_ROUTE.items():
                responses.setdefault(code, {"description": text, "content": ERRORS_CONTENT})
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


def install(app: FastAPI, health: StorageHealth | None = None) -> None:
    """The handlers; `health`: the process's outage bookkeeping, told of outages met here."""
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return response(exc.status, exc.problems, exc.headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [Problem(str(e.get("msg", "invalid value")), _field(e.get("loc", ())))
                    for e in exc.errors()[:20]]
        return response(400, problems)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return response(exc.status_code, [Problem(message)], getattr(exc, "headers", None))

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return response(500, [Problem("internal error; the request was not carried out")])

    async def database_error(request: Request, exc: Exception) -> Response:
        # Handled here rather than by the catch-all `crashed` (Starlette's last resort, which
        # re-raises for the server to log a traceback besides).
        if not is_unavailable(exc):
            return await crashed(request, exc)
        if health is not None:
            health.failed(exc)
        headers = {"Retry-After": RETRY_AFTER, "Cache-Control": "no-store"}
        if "text/html" in request.headers.get("accept", ""):  # a dashboard page in a browser
            return HTMLResponse(_UNAVAILABLE_PAGE, status_code=503, headers=headers)
        return response(503, [Problem(UNAVAILABLE)], headers)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(StorageUnavailable, database_error)
    app.add_exception_handler(Exception, crashed)
    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
