"""The dashboard under `/`: every page module's routes, and the security headers on every response.

One module per page group (signin, activity, sandbox, domains, keys, webhooks, suppressions,
usage, operator), each with a router of its own; what they share is in web.common.
"""

from __future__ import annotations

from fastapi import FastAPI

from mailrelay.web import activity, domains, keys, operator, sandbox, signin, suppressions, usage, webhooks
from mailrelay.web.security import SecurityHeaders
from mailrelay.web.services import WebServices

MODULES = (signin, activity, sandbox, domains, keys, webhooks, suppressions, usage, operator)


def install(api: FastAPI, services: WebServices) -> None:
    """The pages under `/`, and the security headers on every response of `api`."""
    api.state.web = services
    for module in MODULES:
        api.include_router(module.router)
    api.add_middleware(SecurityHeaders)
