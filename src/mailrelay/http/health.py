"""`/livez` and `/readyz`: for a load balancer or an orchestrator, without a key or a session.

`/livez` answers 200 while the process serves requests. `/readyz` answers 200 only when this
node can do its work: the database answers a `SELECT 1`, its schema is at the revision this
mailrelay expects, and the node's SMTP listeners are bound (the `serve` process binds them
before it starts its HTTP processes, and tells each what it bound); else 503, with the checks
that failed named in the body. Both are plain JSON and left out of the OpenAPI document.

A database that does not answer must not hang the probe: the checks run on the executor and
are waited for at most READY_TIMEOUT seconds. Only one check is in flight at a time (a probe
arriving meanwhile waits for the same one), so a hung database holds at most one thread. The
schema revision, once found at head, is not read again (it only moves forward, at start-up).

Security: the body says which check failed in a few fixed words, never the driver's message
(host, user, database names): the detail goes to the log, once per change of state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from mailrelay.http.services import Services
from mailrelay.store import migrate
from mailrelay.store.health import describe, ping

log = logging.getLogger("mailrelay.http")

READY_TIMEOUT = 1.5  # seconds a /readyz waits for the database before answering 503
OK = "ok"
NOT_CHECKED = "not checked"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class _Database:
    database: str  # OK, or why not
    schema: str
    detail: str = ""  # for the log only


class Readiness:
    """The checks of /readyz for one HTTP process."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._at_head = False
        self._in_flight: asyncio.Future[_Database] | None = None
        self._ready: bool | None = None  # at the last probe; None before the first

    async def check(self) -> dict[str, str]:
        """Each check's outcome: "ok" or a few words saying what is wrong."""
        database = await self._database()
        listeners = self._services.listeners()
        unbound = sorted({address.split(" ", 1)[0] for address in listeners.unbound})
        checks = {"database": database.database, "schema": database.schema,
                  "listeners": OK if listeners.ready else
                  f"not bound: {', '.join(unbound)}" if unbound else "none bound"}
        details = [database.detail] if database.detail else []
        if listeners.unbound:
            details.append(f"listeners not bound: {', '.join(listeners.unbound)}")
        self._log(checks, "; ".join(details))
        return checks

    async def _database(self) -> _Database:
        if self._in_flight is None or self._in_flight.done():
            loop = asyncio.get_running_loop()
            self._in_flight = loop.run_in_executor(self._services.executor, self._read, self._at_head)
        try:
            result = await asyncio.wait_for(asyncio.shield(self._in_flight), READY_TIMEOUT)
        except TimeoutError:
            return _Database(f"no answer within {READY_TIMEOUT:g}s", NOT_CHECKED,
                             f"the database did not answer within {READY_TIMEOUT:g}s")
        if result.schema == OK:
            self._at_head = True
        return result

    def _read(self, at_head: bool) -> _Database:
        engine = self._services.engine
        try:
            ping(engine)
        except Exception as exc:
            return _Database("unreachable", NOT_CHECKED, describe(exc))
        if at_head:
            return _Database(OK, OK)
        try:
            current = migrate.current_revision(engine)
        except Exception as exc:
            return _Database(OK, "unreadable", describe(exc))
        head = migrate.head_revision()
        if current == head:
            return _Database(OK, OK)
        return _Database(OK, "not at this version's head revision",
                         f"the schema is at revision {current}, this mailrelay expects {head}")

    def _log(self, checks: dict[str, str], detail: str) -> None:
        ready = all(v == OK for v in checks.values())
        if ready != self._ready:
            if ready:
                if self._ready is not None:
                    log.info("ready again: database, schema and listeners ok")
            else:
                failed = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != OK)
                log.warning("not ready: %s%s", failed, f" ({detail})" if detail else "")
        self._ready = ready


@router.get("/livez")
async def livez() -> JSONResponse:
    return JSONResponse({"status": "live"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.check()
    # "not checked" (the schema, while the database does not answer) is not ok, but not a cause.
    failed = [name for name, outcome in checks.items() if outcome not in (OK, NOT_CHECKED)]
    body: dict[str, Any] = {"status": "not ready" if failed else "ready", "checks": checks}
    if failed:
        body["failed"] = failed
    return JSONResponse(body, status_code=503 if failed else 200, headers={"Cache-Control": "no-store"})


def install(api: FastAPI, services: Services) -> None:
    api.state.readiness = Readiness(services)
    api.include_router(router)
