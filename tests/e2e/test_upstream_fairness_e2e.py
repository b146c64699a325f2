"""One request's many upstream calls do not make everyone else wait: neither for the upstream's calls in
flight (app/upstreams/slots.py) nor for its quota's slots (app/limits/quota.py).

A team sends one request of 300 new texts: 30 calls of 10 to an upstream that takes 2 calls at once, each
300 ms at the stand-in, so the request needs about 4.5 s. Another team's one-text request arriving while
those calls queue is sent after one more of the big request's calls, not after all of them (first come,
first served: about 4 s). The same with a model whose upstream quota paces its calls: the big request's 30
calls need about 4 s of the quota's slots; the small request's call books after the few calls already
booked, not after all 30."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from bench.standin import expected_vector
from tests.support.processes import GatewayFactory, StandIn
from tests.support.teamkit import paced_model, write_config

MODEL = "text-embedding-v4"
LATENCY_S = 0.3


def test_a_small_request_is_not_queued_behind_a_big_ones_calls(
    gateways: GatewayFactory, standin: StandIn, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    upstream = {"kind": "dashscope", "base_url": standin.dashscope_base, "api_key_env": "DASHSCOPE_API_KEY"}
    keys = write_config(
        path,
        {"big": {}, "small": {}},
        upstreams={"ds": {**upstream, "max_connections": 2}},
        models={MODEL: {"deployments": [{"upstream": "ds"}]}},
    )
    gw = gateways.start(config=str(path))
    standin.control(latency_ms=LATENCY_S * 1000)
    run = uuid.uuid4().hex
    big_texts = [f"big {i} {run}" for i in range(300)]

    async def post(key: str, texts: list[str]) -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            t0 = time.monotonic()
            r = await client.post(gw.url + "/v1/embeddings", json={"model": MODEL, "input": texts, "dimensions": 64})
            return r, time.monotonic() - t0

    async def scenario() -> tuple[tuple[httpx.Response, float], tuple[httpx.Response, float]]:
        big = asyncio.create_task(post(keys["big"], big_texts))
        await asyncio.sleep(0.5)  # the shape under test: the small request arrives while the big one's calls queue
        small = await post(keys["small"], [f"small {run}"])
        return await big, small

    (big, big_s), (small, small_s) = asyncio.run(scenario())
    assert big.status_code == 200 and small.status_code == 200, (big.text[:300], small.text[:300])
    got = [d["embedding"] for d in big.json()["data"]]
    assert all(np.allclose(v, expected_vector(MODEL, 64, t)) for v, t in zip(got, big_texts, strict=True))
    assert np.allclose(small.json()["data"][0]["embedding"], expected_vector(MODEL, 64, f"small {run}"))
    assert big_s >= 15 * LATENCY_S  # 30 calls, 2 at a time: the big request really queued
    # Fair: one big call ahead of it, then its own (about 2 x 300 ms). First come, first served: ~26 calls.
    assert small_s < 5 * LATENCY_S, f"the one-text request took {small_s:.2f} s behind the big one"


QUOTA_RPM, QUOTA_WINDOW_S = 120, 15  # a slot every (15 + 0.5 s of slack) / 120 = 0.129 s


def test_a_small_request_is_not_booked_behind_a_big_ones_quota_slots(
    gateways: GatewayFactory, standin: StandIn, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    keys = write_config(
        path,
        {"big": {}, "small": {}},
        limits_window_s=QUOTA_WINDOW_S,
        upstream_queue_s=8.0,
        models=paced_model(QUOTA_RPM),
    )
    gw = gateways.start(config=str(path))
    standin.control(latency_ms=20)
    spacing = (QUOTA_WINDOW_S + 0.5) / QUOTA_RPM
    run = uuid.uuid4().hex
    big_texts = [f"paced big {i} {run}" for i in range(300)]

    async def post(key: str, texts: list[str]) -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            t0 = time.monotonic()
            r = await client.post(gw.url + "/v1/embeddings", json={"model": "paced-v4", "input": texts})
            return r, time.monotonic() - t0

    async def scenario() -> tuple[tuple[httpx.Response, float], tuple[httpx.Response, float]]:
        big = asyncio.create_task(post(keys["big"], big_texts))
        await asyncio.sleep(0.6)  # the big request's calls are booking the quota's slots
        small = await post(keys["small"], [f"paced small {run}"])
        return await big, small

    (big, big_s), (small, small_s) = asyncio.run(scenario())
    assert big.status_code == 200 and small.status_code == 200, (big.text[:300], small.text[:300])
    got = [d["embedding"] for d in big.json()["data"]]
    assert all(np.allclose(v, expected_vector("text-embedding-v4", 64, t)) for v, t in zip(got, big_texts, strict=True))
    assert np.allclose(
        small.json()["data"][0]["embedding"], expected_vector("text-embedding-v4", 64, f"paced small {run}")
    )
    assert big_s >= 28 * spacing  # 30 calls paced by the quota: the big request really booked slots
    # Fair: the calls already booked (quota.BOOKED_AHEAD: 4) and one more of the big request's, then its own
    # (about 6 x 0.129 s). In arrival order: after the ~25 calls the big request had left (about 3.2 s).
    assert small_s < 12 * spacing, f"the one-text request took {small_s:.2f} s behind the big one's quota slots"
