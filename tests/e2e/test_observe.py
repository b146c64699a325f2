"""The request log line, request ids and per-request metrics of app/api/asgi/observe.py, on a real gateway."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import eventually
from tests.support.processes import DEFAULT_TEAM, Gateway, StandIn

OPENAI = "/v1/embeddings"
DS_TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"


def log_line(gw: Gateway, rid: str, timeout: float = 5.0) -> dict[str, Any]:
    """The JSON log line of request `rid` (written just after the response: polled for)."""

    def found() -> list[str]:
        return [line for line in gw.output().splitlines() if line.startswith("{") and f'"{rid}"' in line]

    lines = eventually(found, within=timeout, what=f"a log line for request {rid}")
    assert len(lines) == 1, lines
    entry: dict[str, Any] = orjson.loads(lines[0])
    return entry


def metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_one_json_line_per_request_without_inputs_vectors_or_keys(gateway_memory: Gateway, standin: StandIn) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    secret_text = f"private text {uuid.uuid4().hex}"
    body = {"model": "text-embedding-v4", "input": [secret_text, "hello there"]}
    resp = gateway_memory.post(OPENAI, json=body, headers={"x-request-id": rid}, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == rid
    entry = log_line(gateway_memory, rid)
    assert entry["route"] == "openai" and entry["status"] == 200 and entry["team"] == DEFAULT_TEAM
    assert entry["model"] == "text-embedding-v4" and entry["items"] == 2
    assert entry["hits"] + entry["misses"] == 2 and entry["tokens"] == resp.json()["usage"]["total_tokens"]
    assert 0 < entry["upstream_s"] <= entry["duration_s"]
    output = gateway_memory.output()
    assert secret_text not in output and str(gateway_memory.key) not in output
    first = resp.json()["data"][0]["embedding"][0]
    assert repr(first) not in output and "embedding" not in entry


def test_request_id_accepted_or_replaced_and_sent_once(gateway_memory: Gateway) -> None:
    url = gateway_memory.url
    rid = "abc.DEF_123:4-5"
    resp = gateway_memory.post(OPENAI, json={"model": "no-such-model", "input": "x"}, headers={"x-request-id": rid})
    assert resp.status_code == 404
    assert resp.headers.get_list("x-request-id") == [rid]  # once, even on an error answer
    for unsafe in ("has space", "x" * 129, 'quote"d', "<script>", "a;b"):
        resp = httpx.get(url + "/v1/models", headers={**gateway_memory.headers, "x-request-id": unsafe})
        got = resp.headers.get_list("x-request-id")
        assert len(got) == 1 and got[0] != unsafe and len(got[0]) == 32
    resp = gateway_memory.post(DS_TEXT, json={"model": "text-embedding-v4", "input": {"texts": []}})
    assert resp.status_code == 400
    assert resp.json()["request_id"] == resp.headers["x-request-id"]


def test_errors_and_unknown_paths_are_logged_and_counted_probes_are_not(gateway_memory: Gateway) -> None:
    url = gateway_memory.url
    model = f"made-up-{uuid.uuid4().hex}"
    rid = uuid.uuid4().hex
    before = metric(gateway_memory, "gateway_requests_total", route="other", status_class="4xx")
    gateway_memory.post(OPENAI, json={"model": model, "input": "x"}, headers={"x-request-id": rid})
    entry = log_line(gateway_memory, rid)
    assert (entry["route"], entry["status"]) == ("openai", 404)
    assert model not in gateway_memory.output()  # a client's model name is input: not logged
    rid = uuid.uuid4().hex
    assert httpx.get(url + "/wp-login.php", headers={"x-request-id": rid}).status_code == 404
    assert log_line(gateway_memory, rid)["route"] == "other"
    assert metric(gateway_memory, "gateway_requests_total", route="other", status_class="4xx") == before + 1
    probe = uuid.uuid4().hex
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path, headers={"x-request-id": probe}).status_code == 200
    marker = uuid.uuid4().hex
    assert httpx.get(url + "/wp-login.php", headers={"x-request-id": marker}).status_code == 404
    log_line(gateway_memory, marker)  # logged after the probes were answered: their lines would be out by now
    assert probe not in gateway_memory.output()


def test_overhead_excludes_time_waiting_on_the_upstream(gateway_memory: Gateway, standin: StandIn) -> None:
    labels = {"route": "openai"}
    duration0 = metric(gateway_memory, "gateway_request_duration_seconds_sum", **labels)
    overhead0 = metric(gateway_memory, "gateway_overhead_seconds_sum", **labels)
    standin.control(latency_ms=400)
    body = {"model": "text-embedding-v4", "input": f"slow {uuid.uuid4().hex}"}
    assert gateway_memory.post(OPENAI, json=body, timeout=10).status_code == 200
    duration = metric(gateway_memory, "gateway_request_duration_seconds_sum", **labels) - duration0
    overhead = metric(gateway_memory, "gateway_overhead_seconds_sum", **labels) - overhead0
    assert duration >= 0.4
    assert 0 <= overhead < duration - 0.35
