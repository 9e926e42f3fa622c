"""The OpenAPI document, checked by property-based testing (schemathesis, a bounded run): no
request it generates gets a 5xx, and every answer matches the document."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.integration.http.conftest import APINode

EXAMPLES = 12  # per operation: bounded, about half a second each


def test_no_generated_request_breaks_the_api_or_its_document(
        api_factory: Callable[..., APINode], db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one database is enough for the fuzzer; the handlers are the same")
    api = api_factory()
    schema = schemathesis.openapi.from_url(f"{api.url}/v3/openapi.json")
    headers = {"Authorization": f"Bearer {api.key()}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the document lists no operation"
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            # What the document promises: never a 5xx, only documented statuses, answers in the
            # documented shape. (A request the schema allows may still be refused 400 for a rule
            # a JSON schema cannot say, e.g. text/plain before text/html.)
            case.call_and_validate(headers=headers, checks=[
                not_a_server_error, status_code_conformance, response_schema_conformance])

        check()
