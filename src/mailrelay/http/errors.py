"""Errors in SendGrid's shape: `{"errors": [{"message", "field", "help"}]}`, always.

Every refusal of the API goes through `APIError`, and the handlers here turn FastAPI's own
errors (validation, unknown route, wrong method, a crash) into the same shape, so a client
library that reads `errors[0].message` never meets another format.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("mailrelay.http")

# SendGrid's exact body for a bad, revoked or missing key.
BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
FORBIDDEN = "access forbidden"


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


def install(app: FastAPI) -> None:
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

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crashed)
