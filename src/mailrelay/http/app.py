"""The ASGI application: SendGrid's v3 routes over mailrelay's services."""

from __future__ import annotations

from fastapi import FastAPI

from mailrelay import __version__
from mailrelay.http import activity, admin, errors, health, keys, mail, metrics, webhooks
from mailrelay.http import batches as batch_routes
from mailrelay.http import domains as domain_routes
from mailrelay.http import suppressions as suppression_routes
from mailrelay.http import templates as template_routes
from mailrelay.http.limits import BodyLimit
from mailrelay.http.services import Services

OPENAPI_PATH = "/v3/openapi.json"


def build_api(services: Services) -> FastAPI:
    api = FastAPI(title="mailrelay API", version=__version__, openapi_url=OPENAPI_PATH,
                  docs_url=None, redoc_url=None,
                  # FastAPI's OpenTelemetry hooks look up the global providers on every request
                  # (7 % of an API process's time under load); metrics are ours to export.
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="SendGrid v3-compatible API of a mailrelay server. Authenticate with "
                              "`Authorization: Bearer <API key>`.")
    api.state.services = services
    api.state.openapi_paths = {}  # operations of routes FastAPI does not document itself
    errors.install(api, services.health)
    mail.install(api)
    api.include_router(keys.router)
    api.include_router(suppression_routes.router)
    api.include_router(activity.router)
    api.include_router(template_routes.router)
    api.include_router(batch_routes.router)
    api.include_router(webhooks.router)
    api.include_router(admin.router)
    api.include_router(domain_routes.router)
    health.install(api, services)
    metrics.install(api, services)
    api.add_middleware(BodyLimit, max_body=services.settings.http.max_body)
    return api
