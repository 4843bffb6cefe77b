"""schemathesis against docs/ingest-openapi.yaml, on the server at 127.0.0.1.

Unsigned requests (what schemathesis generates) must all be refused (401, or 413/415/429
before the signature), and the same generated bodies signed with a valid secret must never
get a 5xx; every answer must be one the spec documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from daily_index_tests.ingest.conftest import Sender, ThreadedServer

SPEC = Path(__file__).resolve().parents[2] / "docs" / "ingest-openapi.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
OPERATIONS = [("/api/kpi-data", "POST"), ("/api/kpi-error", "POST"), ("/api/health", "GET")]


def test_generated_requests_never_get_5xx_nor_pass_unsigned(server: ThreadedServer) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    seen: set[int] = set()
    for path, method in OPERATIONS:
        operation = schema[path][method]

        @EXAMPLES
        @given(case=operation.as_strategy())
        def unsigned(case) -> None:
            response = case.call(base_url=server.url)
            case.validate_response(response, checks=CHECKS)
            if case.method == "POST":
                assert response.status_code in (401, 413, 415), response.text
            seen.add(response.status_code)

        unsigned()
    assert 401 in seen and 200 in seen


def test_generated_bodies_signed_never_get_5xx(server: ThreadedServer) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    sender = Sender(server.url)
    seen: set[int] = set()
    with httpx.Client(timeout=10) as client:
        for path in ("/api/kpi-data", "/api/kpi-error"):
            operation = schema[path]["POST"]

            @EXAMPLES
            @given(case=operation.as_strategy())
            def signed(case) -> None:
                raw = json.dumps(case.body).encode()
                response = client.post(
                    server.url + case.path, content=raw, headers=sender.headers(raw)
                )
                assert response.status_code < 500, response.text
                assert response.status_code in (200, 202, 409, 413, 422), response.text
                seen.add(response.status_code)

            signed()
    assert 422 in seen
