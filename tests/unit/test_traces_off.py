"""Traces are off unless the standard OTEL_* variables turn them on; off, no exporter is imported, no part
is wrapped, no front layer added and no export thread started; invalid values are refused at start, naming
them. (OpenTelemetry's SDK itself may be imported anyway: redis-py imports it when it is installed.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.telemetry.config import SERVICE_NAME, from_env

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}

# Starts the app's lifespan in process, serves one request, then reports what OpenTelemetry left behind.
PROBE = """
import sys, threading
from fastapi.testclient import TestClient
from app.main import create_app
from app.config.settings import Settings
from app.telemetry.pipeline import TracedCache
from app.telemetry.upstream import TracedUpstream
app = create_app(Settings())
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    gw = app.state.gateway
    wrapped = isinstance(gw.service.cache, TracedCache) or any(
        isinstance(a, TracedUpstream) for a in gw.upstreams.adapters.values())
    threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("OtelBatch"))
    layers = [m.cls.__name__ for m in app.front]
exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter" in sys.modules
print("exporter" if exporter else "no-exporter", "wrapped" if wrapped else "plain",
      ",".join(threads) or "no-thread", "TraceRequests" in layers)
"""


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(GATEWAY_AUTH="off", LOCAL_MODEL="false", DASHSCOPE_API_KEY="sk-probe-only", **env)
    args = [sys.executable, "-c", PROBE]
    out = subprocess.run(args, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[-2]


def test_unset_starts_nothing() -> None:
    assert probe(OTEL_SERVICE_NAME="named-but-no-endpoint") == "no-exporter plain no-thread False"


def test_disabled_starts_nothing_even_with_an_endpoint() -> None:
    assert probe(OTEL_SDK_DISABLED="true", **ENDPOINT) == "no-exporter plain no-thread False"


def test_an_endpoint_starts_the_exporter_thread_and_the_spans() -> None:
    # The check that the probe can see what it says is absent (the endpoint is never reached: no request is
    # traced, and the queue is empty at shutdown).
    assert probe(**ENDPOINT) == "exporter wrapped OtelBatchSpanRecordProcessor True"


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


def test_the_cli_refuses_an_invalid_value_at_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(GATEWAY_AUTH="off", LOCAL_MODEL="false", OTEL_EXPORTER_OTLP_PROTOCOL="grpc", **ENDPOINT)
    args = [sys.executable, "-m", "app.cli", "serve", "--port", "1"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in out.stderr
    assert "Traceback" not in out.stderr
