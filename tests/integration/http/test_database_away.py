"""Every route that needs the database answers 503 with Retry-After while it is away: the API in
SendGrid's error shape, a dashboard page as a page; never 500, never a traceback in the log, and
one line for the outage however many requests met it. Served over an engine whose server
refuses connections, beside the node's own (which works)."""

from __future__ import annotations

import dataclasses
import logging
import socket

import pytest

from mailrelay.accounts.passwords import make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.accounts.websessions import WebSessions
from mailrelay.http.app import build_api
from mailrelay.http.server import HTTPServer
from mailrelay.http.services import Services
from mailrelay.store.db import create_engine
from mailrelay.store.health import StorageHealth
from mailrelay.web import pages
from mailrelay.web.common import SESSION_COOKIE
from mailrelay.web.services import WebServices
from tests.integration.http.conftest import APINode

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the node's; the refused one is PostgreSQL

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_routes_that_need_the_database_answer_503_while_it_is_away(
        api: APINode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    refused = create_engine(f"postgresql://mailrelay@127.0.0.1:{_closed_port()}/mailrelay", connect_timeout=2)
    own: Services = api.server.app.state.services
    health = StorageHealth()
    accounts = AccountService(refused, make_hasher())
    services = dataclasses.replace(own, engine=refused, accounts=accounts, health=health)
    app = build_api(services)
    pages.install(app, WebServices(settings=own.settings, accounts=accounts, sessions=WebSessions(refused),
                                   lockout=own.auth_limiter, engine=refused, executor=own.executor,
                                   secure_cookies=False))
    server = HTTPServer(app, own.settings, None)
    assert api.node.call(server.start())
    try:
        with api.client(api.key()) as http:
            url = f"http://127.0.0.1:{server.port}"
            for path in ("/v3/api_keys", "/v3/suppression/bounces", "/v3/stats?start_date=2024-01-01"):
                r = http.get(url + path)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["Retry-After"] == "5"
                assert r.json() == {"errors": [{"message": "storage unavailable, try again later",
                                                "field": None, "help": None}]}
                assert "mailrelay@" not in r.text  # no driver detail
            r = http.post(url + "/v3/mail/send", json={})  # the key is checked before the document
            assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
            http.cookies.set(SESSION_COOKIE, "a-session")
            page = http.get(url + "/activity", headers={"Accept": "text/html,application/xhtml+xml"})
            assert page.status_code == 503 and page.headers["content-type"].startswith("text/html"), page.text
            assert "try again" in page.text and page.headers["Retry-After"] == "5"
            assert http.get(url + "/livez").status_code == 200
            assert http.get("/v3/api_keys").status_code == 200  # the node's own database is there
    finally:
        api.node.call(server.stop())
        accounts.close()
        refused.dispose()
    assert health.down
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    outage = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(outage) == 1 and outage[0].startswith("database unavailable: OperationalError"), outage
