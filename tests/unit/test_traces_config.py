"""Traces are on only when the standard OTEL_* variables ask for them; what the SDK would silently replace
by a default is refused, naming the variable (tests/e2e/test_traces_off_e2e.py: what runs when off)."""

from __future__ import annotations

import pytest

from app.telemetry.config import SERVICE_NAME, from_env

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # the default endpoint, localhost:4318
        ({"OTEL_TRACES_EXPORTER": "none", **ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", **ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "false", **ENDPOINT}, True),
    ],
)
def test_on_only_when_configured(env: dict[str, str], on: bool) -> None:
    assert (from_env(env) is not None) is on


def test_the_sampler_and_service_name() -> None:
    c = from_env({**ENDPOINT, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"})
    assert c is not None and (c.sampler, c.ratio, c.service_name) == ("parentbased_traceidratio", 0.01, SERVICE_NAME)
    c = from_env({**ENDPOINT, "OTEL_SERVICE_NAME": "edge-embeddings"})
    assert c is not None and (c.sampler, c.ratio, c.service_name) == ("parentbased_always_on", None, None)
    c = from_env({**ENDPOINT, "OTEL_RESOURCE_ATTRIBUTES": "service.name=x,team=ml"})
    assert c is not None and c.service_name is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
        ({"OTEL_TRACES_SAMPLER": "ratio"}, "OTEL_TRACES_SAMPLER=ratio"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1%"}, "OTEL_TRACES_SAMPLER_ARG=1%"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG=2"),
    ],
)
def test_what_the_sdk_would_silently_replace_is_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        from_env({**ENDPOINT, **env})


def test_the_protocol_of_the_traces_wins_over_the_general_one() -> None:
    env = {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert from_env(env) is not None
