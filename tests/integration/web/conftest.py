"""The dashboard is served by the HTTP API's server: the same node fixtures."""

from __future__ import annotations

from tests.integration.delivery.conftest import mx_port, remote_mx
from tests.integration.http.conftest import api, api_factory, ca, node_factory

__all__ = ["api", "api_factory", "ca", "mx_port", "node_factory", "remote_mx"]
