"""OpenTelemetry traces end to end: the gateway as a real process (auth on, Redis, hot cache), two stand-in
upstreams, a real OTLP/HTTP receiver on loopback (tests/support/otlp.py), the openai SDK as the caller.

Each request carries the caller's `traceparent` (sampled); the gateway samples nothing on its own
(parentbased_traceidratio at 0), so what the receiver gets is exactly the callers' traces:
- a hit: the request span under the caller's span, with its cache read and admission, nothing upstream;
- a miss whose first upstream attempt fails (503): flights wait -> upstream call -> two attempts on the
  same deployment (the second a retry), and the cache write; the stand-in saw each attempt's traceparent;
- a failover: the first attempt on a deployment that is down, the second on the other one (whose
  vectors, of another cache identity, are served but not written).
The trace id is in the access log line, and the request-duration histogram carries it as an exemplar.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI

from tests.support.otlp import Receiver, Span, start_receiver
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, start_standin, stop
from tests.support.teamkit import write_config

SINGLE, PAIRED = "text-embedding-v4", "text-embedding-v3"  # one deployment (ds-a); two (ds-a, ds-b)
TEAM = "platform"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def pair(logdir: Path) -> Iterator[tuple[StandIn, StandIn]]:
    a, b = start_standin(logdir / "trace-standin-a.log"), start_standin(logdir / "trace-standin-b.log")
    yield a, b
    stop(a.proc)
    stop(b.proc)


@pytest.fixture(scope="module")
def traced(
    gateways: GatewayFactory,
    redis_server: RedisServer,
    pair: tuple[StandIn, StandIn],
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, str]]:
    a, b = pair
    path = tmp_path_factory.mktemp("traces") / "gateway.yaml"
    upstreams = {
        name: {"kind": "dashscope", "base_url": s.dashscope_base, "api_key_env": "DASHSCOPE_API_KEY"}
        for name, s in (("ds-a", a), ("ds-b", b))
    }
    models = {
        SINGLE: {"deployments": [{"upstream": "ds-a"}]},
        PAIRED: {"deployments": [{"upstream": "ds-a"}, {"upstream": "ds-b"}]},
    }
    keys = write_config(path, {TEAM: {"rpm": 1000}}, upstreams=upstreams, models=models)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    gw = gateways.start(redis_url=redis_server.url, config=str(path), env=env)
    yield gw, keys[TEAM]
    stop(gw.proc)


def caller_span() -> tuple[str, str, str]:
    """A new sampled caller span: (trace id, span id, its traceparent)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def embed(gw: Gateway, key: str, model: str, texts: list[str], traceparent: str | None) -> None:
    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    headers = {"traceparent": traceparent} if traceparent else {}
    dims = 64 if model == SINGLE else 512
    r = client.embeddings.create(model=model, input=texts, dimensions=dims, extra_headers=headers)
    assert len(r.data) == len(texts)


def one(spans: list[Span], name: str, parent: Span) -> Span:
    found = [s for s in spans if s.name == name and s.parent_id == parent.span_id]
    assert len(found) == 1, (name, [(s.name, s.parent_id) for s in spans])
    return found[0]


def request_span(spans: list[Span], caller: str) -> Span:
    (root,) = [s for s in spans if s.parent_id == caller]
    assert root.name == "POST /v1/embeddings" and root.kind == "server" and root.service == "gateway-under-test"
    assert root.attributes["gateway.team"] == TEAM and root.attributes["http.response.status_code"] == 200
    return root


def log_lines(gw: Gateway) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gw.output().splitlines() if line.startswith('{"request_id"')]


def test_a_hit_is_a_request_span_with_its_cache_read_and_admission(
    traced: tuple[Gateway, str], receiver: Receiver, pair: tuple[StandIn, StandIn]
) -> None:
    gw, key = traced
    texts = [f"hit {uuid.uuid4().hex}", f"hit {uuid.uuid4().hex}"]
    embed(gw, key, SINGLE, texts, None)  # fills the cache; not sampled (ratio 0, no sampled parent)
    calls = len(pair[0].calls())
    trace_id, caller, traceparent = caller_span()
    embed(gw, key, SINGLE, texts, traceparent)
    spans = receiver.trace(trace_id, 3)
    root = request_span(spans, caller)
    assert root.attributes["gateway.model"] == SINGLE
    assert (root.attributes["gateway.items"], root.attributes["gateway.hits"], root.attributes["gateway.misses"]) == (
        2, 2, 0,
    )  # fmt: skip
    read = one(spans, "cache.read", root)
    assert (read.attributes["gateway.keys"], read.attributes["gateway.found"]) == (2, 2)
    admission = one(spans, "admission", root)
    assert admission.attributes["gateway.limited"] is True and admission.attributes["gateway.admitted"] is True
    assert {s.name for s in spans} == {"POST /v1/embeddings", "cache.read", "admission"}
    assert len(pair[0].calls()) == calls
    lines = [line for line in log_lines(gw) if line.get("trace_id") == trace_id]
    assert len(lines) == 1 and lines[0]["hits"] == 2
    metrics = httpx.get(gw.url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert any(
        line.startswith("gateway_request_duration_seconds_bucket") and 'trace_id="' in line
        for line in metrics.text.splitlines()
    ), "no exemplar on the request-duration histogram"
    assert "# {trace_id=" not in httpx.get(gw.url + "/metrics").text  # the text format has none


def test_a_miss_with_a_retry_shows_each_attempt_and_sends_its_traceparent(
    traced: tuple[Gateway, str], receiver: Receiver, pair: tuple[StandIn, StandIn]
) -> None:
    gw, key = traced
    a = pair[0]
    a.reset()
    a.control(fail_next=1, fail_modes=["503"])
    trace_id, caller, traceparent = caller_span()
    embed(gw, key, SINGLE, [f"miss {uuid.uuid4().hex}"], traceparent)
    spans = receiver.trace(trace_id, 8)
    root = request_span(spans, caller)
    assert (root.attributes["gateway.hits"], root.attributes["gateway.misses"]) == (0, 1)
    assert one(spans, "cache.read", root).attributes["gateway.found"] == 0
    one(spans, "admission", root)
    wait = one(spans, "flights.wait", root)
    call = one(spans, "upstream.call", wait)
    assert call.attributes["gateway.attempts"] == 2
    attempts = sorted((s for s in spans if s.name == "upstream.attempt"), key=lambda s: s.start_ns)
    assert [s.parent_id for s in attempts] == [call.span_id] * 2
    assert [(s.attributes["gateway.deployment"], s.attributes["gateway.status"]) for s in attempts] == [
        ("ds-a", "503"), ("ds-a", "200"),
    ]  # fmt: skip
    assert [s.attributes["gateway.retry"] for s in attempts] == [False, True]
    assert [s.attributes["gateway.failover"] for s in attempts] == [False, False]
    assert attempts[0].error and not attempts[1].error and all(s.kind == "client" for s in attempts)
    assert one(spans, "cache.write", wait).attributes["gateway.entries"] == 1
    seen = [c.get("traceparent") for c in a.calls()]
    assert seen == [f"00-{trace_id}-{s.span_id}-01" for s in attempts]


def test_a_failover_shows_the_attempt_on_the_other_deployment(
    traced: tuple[Gateway, str], receiver: Receiver, pair: tuple[StandIn, StandIn]
) -> None:
    gw, key = traced
    a, b = pair
    a.reset()
    b.reset()
    a.control(down=True)
    try:
        for _ in range(30):  # the first deployment is drawn at random: until one request tries ds-a first
            trace_id, caller, traceparent = caller_span()
            embed(gw, key, PAIRED, [f"failover {uuid.uuid4().hex}"], traceparent)
            if a.calls():
                break
    finally:
        a.control(down=False)
    assert len(a.calls()) == 1
    spans = receiver.trace(trace_id, 7)
    call = one(spans, "upstream.call", one(spans, "flights.wait", request_span(spans, caller)))
    attempts = sorted((s for s in spans if s.name == "upstream.attempt"), key=lambda s: s.start_ns)
    assert [s.parent_id for s in attempts] == [call.span_id] * 2
    assert [(s.attributes["gateway.deployment"], s.attributes["gateway.status"]) for s in attempts] == [
        ("ds-a", "503"), ("ds-b", "200"),
    ]  # fmt: skip
    assert [s.attributes["gateway.failover"] for s in attempts] == [False, True]
    assert [s.attributes["gateway.attempt"] for s in attempts] == [1, 2]
    assert a.calls()[0]["traceparent"] == f"00-{trace_id}-{attempts[0].span_id}-01"
    assert "cache.write" not in {s.name for s in spans}  # another deployment's vectors: served, not cached
    assert b.calls()[-1]["traceparent"] == f"00-{trace_id}-{attempts[1].span_id}-01"


def test_unsampled_and_malformed_trace_context_are_served_and_logged_but_not_exported(
    traced: tuple[Gateway, str], receiver: Receiver
) -> None:
    gw, key = traced
    trace_id, _, traceparent = caller_span()
    unsampled = traceparent[:-2] + "00"
    embed(gw, key, SINGLE, [f"unsampled {uuid.uuid4().hex}"], unsampled)
    embed(gw, key, SINGLE, [f"malformed {uuid.uuid4().hex}"], "00-nonsense-01")
    deadline = time.monotonic() + 10
    while not any(line.get("trace_id") == trace_id for line in log_lines(gw)) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log_lines(gw)
    assert any(line.get("trace_id") == trace_id for line in lines)  # the caller's trace, though not sampled
    assert all(len(line.get("trace_id", "")) == 32 for line in lines if line.get("route") == "openai")
    huge = {"authorization": f"Bearer {key}", "traceparent": traceparent, "tracestate": "k=" + "v" * 100_000}
    refused = httpx.post(gw.url + "/v1/embeddings", json={"model": SINGLE, "input": "x"}, headers=huge)
    assert refused.status_code == 431  # the header cap comes first: no span for it (checked with the others below)
    marker = caller_span()
    embed(gw, key, SINGLE, ["marker"], marker[2])  # exported after the two above, by the same exporter
    receiver.trace(marker[0], 1)
    time.sleep(0.3)  # one more schedule delay (100 ms) for anything that would trail it
    assert not [s for s in receiver.spans if s.trace_id == trace_id]
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None  # the test process itself exports nothing
