"""`/livez` and `/readyz`: open without a key, plain JSON, out of the OpenAPI document; readyz
says 503, and which check failed, when the database is unreachable or silent, the schema is
behind head, or a listener is not bound, and never makes the prober wait past its bound."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from mailrelay.http.app import OPENAPI_PATH, build_api
from mailrelay.http.health import READY_TIMEOUT
from mailrelay.http.server import HTTPServer
from mailrelay.http.services import Services
from mailrelay.store import migrate
from mailrelay.store.db import create_engine
from tests.integration.http.conftest import APINode

CHECKS = {"database": "ok", "schema": "ok", "listeners": "ok"}


def test_livez_and_readyz_answer_without_a_key_and_stay_out_of_the_openapi_document(api: APINode) -> None:
    with api.client() as http:
        live = http.get("/livez")
        assert (live.status_code, live.json()) == (200, {"status": "live"})
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": CHECKS}
        assert ready.headers["content-type"] == "application/json"
        paths = http.get(OPENAPI_PATH).json()["paths"]
    assert "/livez" not in paths and "/readyz" not in paths
    assert "/v3/mail/send" in paths  # the document itself is still whole


def _set_revision(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_readyz_is_503_while_the_schema_is_behind_head_and_caches_head_once_seen(
        api: APINode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mailrelay.http")
    engine = api.node.app.engine
    head = migrate.head_revision()
    behind = f"{int(head) - 1:04d}"
    _set_revision(engine, behind)
    try:
        with api.client() as http:
            r = http.get("/readyz")
            assert r.status_code == 503, r.text
            assert r.json()["failed"] == ["schema"]
            assert r.json()["checks"]["database"] == "ok"
            assert behind not in r.text  # versions stay in the log, not in an open answer
            assert http.get("/readyz").status_code == 503
            _set_revision(engine, head)
            assert http.get("/readyz").status_code == 200  # read again while it was behind
            _set_revision(engine, behind)
            assert http.get("/readyz").status_code == 200  # at head once: not read again
    finally:
        _set_revision(engine, head)
    lines = [r.getMessage() for r in caplog.records if r.name == "mailrelay.http"]
    assert lines == [f"not ready: schema: not at this version's head revision (the schema is at revision "
                     f"{behind}, this mailrelay expects {head})",
                     "ready again: database, schema and listeners ok"]  # one line per change of state


@pytest.fixture
def serve_with(api: APINode) -> Iterator[Callable[[Services], str]]:
    """Another HTTP server on the node's loop, over `services` changed by the test."""
    servers: list[HTTPServer] = []

    def start(services: Services) -> str:
        server = HTTPServer(build_api(services), services.settings, None)
        assert api.node.call(server.start())
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        api.node.call(server.stop())


def _services(api: APINode) -> Services:
    services: Services = api.server.app.state.services
    return services


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readyz_is_503_at_once_when_the_database_refuses_and_within_its_bound_when_it_is_silent(
        api: APINode, serve_with: Callable[[Services], str]) -> None:
    refused = create_engine(f"postgresql://mailrelay@127.0.0.1:{_closed_port()}/mailrelay", connect_timeout=2)
    silent_socket = socket.socket()
    silent_socket.bind(("127.0.0.1", 0))
    silent_socket.listen(8)  # the kernel completes the connection; nobody ever answers
    silent = create_engine(f"postgresql://mailrelay@127.0.0.1:{silent_socket.getsockname()[1]}/mailrelay",
                           connect_timeout=2)  # libpq's least: the thread is free soon after
    try:
        with api.client() as http:
            url = serve_with(dataclasses.replace(_services(api), engine=refused))
            started = time.monotonic()
            r = http.get(f"{url}/readyz")
            assert time.monotonic() - started < READY_TIMEOUT
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == "not ready" and body["failed"] == ["database"]
            assert body["checks"] == {"database": "unreachable", "schema": "not checked", "listeners": "ok"}
            assert "mailrelay@" not in r.text and "refused" not in r.text  # no driver detail
            assert http.get(f"{url}/livez").status_code == 200  # alive all the same

            url = serve_with(dataclasses.replace(_services(api), engine=silent))
            started = time.monotonic()
            r = http.get(f"{url}/readyz")
            took = time.monotonic() - started
            assert READY_TIMEOUT <= took < READY_TIMEOUT + 1.0, took
            assert r.status_code == 503 and r.json()["checks"]["database"].startswith("no answer within")
            assert http.get("/readyz").status_code == 200  # the node's own database is fine
    finally:
        silent_socket.close()
        refused.dispose()
        silent.dispose()


def test_readyz_is_503_when_a_listener_could_not_be_bound(
        api_factory: Callable[..., APINode]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        api = api_factory(f'[listener.alt]\nlisten = ["127.0.0.1:{port}"]\n')
        with api.client() as http:
            r = http.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["failed"] == ["listeners"]
    assert r.json()["checks"]["listeners"] == "not bound: alt"  # its address is in the log only
