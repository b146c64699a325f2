"""Upstream failures map to clean errors in the caller's wire format: 429 keeps Retry-After, 5xx and resets
become 502, timeouts 504, the upstream's own 4xx stays a 4xx; a wrong upstream key is a 502 that names no
key. Nothing a client or the log sees holds the key."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.polling import eventually
from tests.support.processes import UPSTREAM_KEY, Gateway, GatewayFactory, StandIn

OPENAI = "/v1/embeddings"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
WRONG_KEY = "sk-wrong-" + uuid.uuid4().hex


# The error map itself, one upstream answer per request: retries and the circuit breaker (which absorb these
# failures in normal operation) are off here; tests/e2e/test_upstream_failures.py covers them.
NO_RESILIENCE = {"RETRY_ATTEMPTS": "1", "BREAKER_FAILURES": "1000000"}


@pytest.fixture(scope="module")
def mapping_gw(gateways: GatewayFactory) -> Gateway:
    return gateways.start(env=NO_RESILIENCE)


def body(route: str, model: str = "text-embedding-v4") -> dict[str, Any]:
    text = "t " + uuid.uuid4().hex
    if route == OPENAI:
        return {"model": model, "input": [text]}
    return {"model": model, "input": {"texts": [text]}}


def call(gw: Gateway, route: str, model: str = "text-embedding-v4") -> httpx.Response:
    return gw.post(route, json=body(route, model), timeout=30)


def error_of(resp: httpx.Response, route: str) -> tuple[str | None, str]:
    data = resp.json()
    if route == OPENAI:
        return data["error"]["code"], data["error"]["message"]
    assert data["request_id"]
    return data["code"], data["message"]


@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_upstream_429_keeps_retry_after(mapping_gw: Gateway, standin: StandIn, route: str) -> None:
    standin.control(fail_rate=1, fail_modes=["429"], retry_after=3)
    resp = call(mapping_gw, route)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    code, message = error_of(resp, route)
    # The upstream's own code on DashScope's wire; OpenAI's on OpenAI's, whatever the upstream said.
    assert (
        code == ("Throttling.RateQuota" if route == TEXT else "rate_limit_exceeded") and "rate limit" in message.lower()
    )
    standin.control(retry_after=None)
    resp = call(mapping_gw, route)
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1


def test_openai_sdk_sees_a_rate_limit_error(mapping_gw: Gateway, standin: StandIn) -> None:
    standin.control(fail_rate=1, fail_modes=["429"], retry_after=2)
    client = openai.OpenAI(base_url=mapping_gw.url + "/v1", api_key=mapping_gw.key, max_retries=0)
    with client, pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="text-embedding-v4", input="throttled " + uuid.uuid4().hex)
    assert info.value.response.headers["retry-after"] == "2"


@pytest.mark.parametrize("route", [OPENAI, TEXT])
@pytest.mark.parametrize("control", [{"fail_modes": ["500"]}, {"fail_modes": ["503"]}, {"fail_modes": ["reset"]}])
def test_upstream_failures_are_502(mapping_gw: Gateway, standin: StandIn, route: str, control: dict[str, Any]) -> None:
    standin.control(fail_rate=1, **control)
    resp = call(mapping_gw, route)
    assert resp.status_code == 502, resp.text
    code, message = error_of(resp, route)
    assert message.startswith("upstream dashscope")
    if route == TEXT:
        assert code == "InternalError.Upstream"
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_upstream_down_is_502_and_recovers(mapping_gw: Gateway, standin: StandIn, route: str) -> None:
    standin.control(down=True)
    assert call(mapping_gw, route).status_code == 502
    standin.control(down=False)
    assert call(mapping_gw, route).status_code == 200


def test_a_failure_is_not_cached(mapping_gw: Gateway, standin: StandIn) -> None:
    payload = body(OPENAI)
    standin.control(fail_rate=1, fail_modes=["500"])
    assert mapping_gw.post(OPENAI, json=payload).status_code == 502
    standin.control(fail_rate=0)
    ok = mapping_gw.post(OPENAI, json=payload)
    assert ok.status_code == 200 and ok.headers["x-cache-misses"] == "1"


@pytest.fixture(scope="module")
def slow_gateway(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    """Upstream timeout 0.5 s; text-embedding-v3 pointed at a model id the upstream does not know."""
    config: Path = tmp_path_factory.mktemp("slow") / "gateway.yaml"
    config.write_text(
        "upstreams:\n"
        "  dashscope:\n"
        "    kind: dashscope\n"
        f"    base_url: {gateways.standin.dashscope_base}\n"
        "    api_key_env: DASHSCOPE_API_KEY\n"
        "    timeout_s: 0.5\n"
        "models:\n"
        "  text-embedding-v3:\n"
        "    upstream_model: text-embedding-v9\n"
    )
    return gateways.start(config=str(config), env=NO_RESILIENCE)


@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_upstream_slower_than_its_timeout_is_504(slow_gateway: Gateway, standin: StandIn, route: str) -> None:
    standin.control(latency_ms=2500)
    t0 = time.monotonic()
    resp = call(slow_gateway, route)
    assert resp.status_code == 504, resp.text
    assert time.monotonic() - t0 < 2.0  # the gateway gave up after its 0.5 s, not after the upstream's 2.5 s
    code, _ = error_of(resp, route)
    assert code == ("RequestTimeOut" if route == TEXT else "upstream_timeout")
    eventually(standin.calls, within=5)  # the abandoned upstream call finished, so it lands in this test
    standin.control(latency_ms=100)
    assert call(slow_gateway, route).status_code == 200


@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_upstream_4xx_stays_4xx_with_its_code(slow_gateway: Gateway, standin: StandIn, route: str) -> None:
    resp = call(slow_gateway, route, model="text-embedding-v3")
    assert resp.status_code == 404, resp.text
    code, message = error_of(resp, route)
    assert code == "ModelNotFound" and "text-embedding-v9" in message
    assert len(standin.calls()) == 1


@pytest.fixture(scope="module")
def wrong_key_gateway(gateways: GatewayFactory) -> Gateway:
    return gateways.start(upstream_key=WRONG_KEY, env=NO_RESILIENCE)


@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_a_wrong_upstream_key_is_502_naming_no_key(wrong_key_gateway: Gateway, standin: StandIn, route: str) -> None:
    resp = call(wrong_key_gateway, route)
    assert resp.status_code == 502, resp.text
    _, message = error_of(resp, route)
    assert "credentials" in message
    assert WRONG_KEY not in resp.text and "sk-" not in resp.text and "Bearer" not in resp.text


def test_no_log_line_holds_a_key(
    mapping_gw: Gateway, slow_gateway: Gateway, wrong_key_gateway: Gateway, standin: StandIn
) -> None:
    for gw in (mapping_gw, slow_gateway, wrong_key_gateway):
        log = gw.output()
        assert UPSTREAM_KEY not in log and WRONG_KEY not in log
        assert "Traceback" not in log and "Bearer" not in log
