"""Traces off unless the standard OTEL_* variables turn them on: off, no exporter is imported, no part is
wrapped, no front layer added and no export thread started (the app built and served in a new process); an
invalid value stops `serve` at start, naming it. (OpenTelemetry's SDK itself may be imported anyway:
redis-py imports it when it is installed.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
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


def test_the_cli_refuses_an_invalid_value_at_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    env.update(GATEWAY_AUTH="off", LOCAL_MODEL="false", OTEL_EXPORTER_OTLP_PROTOCOL="grpc", **ENDPOINT)
    args = [sys.executable, "-m", "app.cli", "serve", "--port", "1"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in out.stderr
    assert "Traceback" not in out.stderr
