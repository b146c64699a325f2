"""Schemathesis against the gateway's own OpenAPI document, for every route it documents: no 5xx and no
response that breaks the document (status codes, content types, headers and bodies as documented).

Bounded: FUZZ_EXAMPLES examples per operation (default 150), so the run stays well under two minutes.
"""

from __future__ import annotations

import itertools
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.support.processes import Gateway, GatewayFactory, RedisServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def fuzz_gateway(gateways: GatewayFactory, redis_server: RedisServer) -> Gateway:
    return gateways.start(redis_url=redis_server.url)


ROUTES = {
    "POST /v1/embeddings",
    "POST /api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
    "POST /api/v1/services/embeddings/text-embedding/text-embedding",
    "GET /v1/models",
    "GET /healthz",
    "GET /readyz",
}


def test_every_documented_route_keeps_its_contract(fuzz_gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(fuzz_gateway.url + "/openapi.json")
    schema.config.update(base_url=fuzz_gateway.url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= ROUTES
    calls: dict[int, int] = {}
    for operation, mode in itertools.product(operations, MODES):
        if mode is GenerationMode.NEGATIVE and not operation.body:
            continue  # nothing to break in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call_and_validate(checks=CHECKS, headers=fuzz_gateway.headers, timeout=30)
            calls[response.status_code] = calls.get(response.status_code, 0) + 1

        fuzz()
    print("statuses:", sorted(calls.items()))
    assert sum(calls.values()) >= len(ROUTES) * 2
