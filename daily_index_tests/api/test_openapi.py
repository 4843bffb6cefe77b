"""The read API against its OpenAPI spec (docs/api-openapi.yaml) with schemathesis.

Positive and negative cases for every operation against a real server: no 5xx, status
codes, content types, headers and bodies as documented, and keys enforced (schemathesis
repeats a successful request without the key and with a wrong one: both must be refused).
Positive data acceptance is left out on purpose: the spec cannot say that `from` must not
be after `to`, or that a window is at most 20,000 days, and the API refuses those with 422.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from daily_index_tests.api.support import KEY, REPORT_DAY, auth

SPEC = Path(__file__).resolve().parents[2] / "docs" / "api-openapi.yaml"

schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_spec(case, api):
    case.call_and_validate(base_url=api.url, headers=auth(), checks=CHECKS)


def operations() -> list[tuple[str, str]]:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    examples = {"{kpi_id}": "btc_price", "{date}": REPORT_DAY.isoformat()}
    found = []
    for template, methods in spec["paths"].items():
        path = template
        for name, value in examples.items():
            path = path.replace(name, value)
        found.extend((method.upper(), path) for method in methods)
    return found


def test_spec_lists_every_endpoint():
    assert operations() == [
        ("GET", "/v1/health"),
        ("GET", "/v1/kpis"),
        ("GET", "/v1/kpis/btc_price/series"),
        ("GET", f"/v1/reports/{REPORT_DAY}"),
    ]


@pytest.mark.parametrize(("method", "path"), operations())
def test_every_operation_needs_a_key(api, method, path):
    with_key = httpx.request(method, api.url + path, headers=auth(), timeout=10)
    without = httpx.request(method, api.url + path, timeout=10)
    wrong = httpx.request(method, api.url + path, headers={"X-API-Key": KEY[::-1]}, timeout=10)
    assert with_key.status_code == 200
    assert without.status_code == 401
    assert wrong.status_code == 401
