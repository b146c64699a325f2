"""Several deployments of one model, end to end: two stand-in upstreams (real processes), gateways started
as real processes sharing a real Redis, clients over HTTP.

- One deployment throttling (429) or down (503, or its process stopped): every request succeeds via the
  other within the deadline.
- Both healthy, three gateway processes offered three times the combined quota: traffic splits by quota
  and neither stand-in ever sees more than its own quota in any window.
- Vectors cached from one deployment serve requests routed to the other only when the operator declared
  them equivalent (a shared `cache_group`); never otherwise, also not between two gateways whose
  upstreams point at different servers and share a Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, start_standin, stop
from tests.support.teamkit import write_config

OPENAI = "/v1/embeddings"
WINDOW_S = 4.0
QUOTA_A, QUOTA_B = 8, 4  # upstream calls per window
DEADLINE_S = 8.0


@pytest.fixture(scope="module")
def pair(logdir: Path) -> Iterator[tuple[StandIn, StandIn]]:
    a, b = start_standin(logdir / "standin-a.log"), start_standin(logdir / "standin-b.log")
    yield a, b
    stop(a.proc)
    stop(b.proc)


@pytest.fixture
def fresh(pair: tuple[StandIn, StandIn]) -> tuple[StandIn, StandIn]:
    for s in pair:
        s.reset()
    return pair


def upstreams(a: StandIn, b: StandIn) -> dict[str, Any]:
    return {
        "ds-a": {"kind": "dashscope", "base_url": a.dashscope_base, "api_key_env": "DASHSCOPE_API_KEY"},
        "ds-b": {"kind": "dashscope", "base_url": b.dashscope_base, "api_key_env": "DASHSCOPE_API_KEY"},
    }


def config(path: Path, a: StandIn, b: StandIn, **settings: Any) -> str:
    write_config(path, {}, upstreams=upstreams(a, b), **settings)
    return str(path)


@pytest.fixture(scope="module")
def failover_gw(
    gateways: GatewayFactory, redis_server: RedisServer, pair: tuple[StandIn, StandIn], tmp_path_factory: Any
) -> Iterator[Gateway]:
    models = {
        "text-embedding-v4": {"deployments": [{"upstream": "ds-a"}, {"upstream": "ds-b"}]},
        "text-embedding-v3": {
            "deployments": [{"upstream": "ds-a", "cache_group": "v3"}, {"upstream": "ds-b", "cache_group": "v3"}]
        },
    }
    path = Path(tmp_path_factory.mktemp("fleet")) / "gateway.yaml"
    env = {"REQUEST_DEADLINE_S": str(DEADLINE_S), "BREAKER_FAILURES": "3", "BREAKER_OPEN_S": "1"}
    gw = gateways.start(redis_url=redis_server.url, config=config(path, *pair, models=models), env=env)
    yield gw
    stop(gw.proc)


def texts_seen(standin: StandIn) -> int:
    return sum(c["n_items"] for c in standin.calls() if not c["failed"])


async def burst(gw: Gateway, model: str, texts: list[str]) -> list[tuple[httpx.Response, float]]:
    async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers, timeout=60) as client:

        async def one(text: str) -> tuple[httpx.Response, float]:
            t0 = time.monotonic()
            dim = 512 if model == "text-embedding-v3" else 64
            r = await client.post(OPENAI, json={"model": model, "input": [text], "dimensions": dim})
            return r, time.monotonic() - t0

        return await asyncio.gather(*(one(t) for t in texts))


@pytest.mark.parametrize("trouble", [{"fail_rate": 1, "fail_modes": ["429"], "retry_after": 30}, {"down": True}])
def test_one_deployment_failing_the_other_serves(
    failover_gw: Gateway, fresh: tuple[StandIn, StandIn], trouble: dict[str, Any]
) -> None:
    a, b = fresh
    for broken, healthy in ((a, b), (b, a)):
        broken.control(**trouble)
        healthy.control(down=False, fail_rate=0)
        run = uuid.uuid4().hex
        replies = asyncio.run(burst(failover_gw, "text-embedding-v4", [f"{run} {i}" for i in range(40)]))
        assert [r.status_code for r, _ in replies] == [200] * 40, [r.text for r, _ in replies if r.status_code != 200]
        assert max(took for _, took in replies) < DEADLINE_S
        assert texts_seen(healthy) >= 40 and texts_seen(broken) == 0
        broken.reset()
        healthy.reset()
        time.sleep(1.2)  # the broken one's circuit (open 1 s) lets a probe through again


def test_one_deployment_stopped_the_other_serves(
    gateways: GatewayFactory, redis_server: RedisServer, logdir: Path, tmp_path: Path, pair: tuple[StandIn, StandIn]
) -> None:
    gone = start_standin(logdir / "standin-gone.log")
    models = {"text-embedding-v4": {"deployments": [{"upstream": "ds-a"}, {"upstream": "ds-b"}]}}
    gw = gateways.start(
        redis_url=redis_server.url,
        config=config(tmp_path / "gw.yaml", gone, pair[1], models=models),
        env={"REQUEST_DEADLINE_S": str(DEADLINE_S)},
    )
    try:
        stop(gone.proc)
        pair[1].reset()
        replies = asyncio.run(burst(gw, "text-embedding-v4", [f"{uuid.uuid4().hex}" for _ in range(30)]))
        assert [r.status_code for r, _ in replies] == [200] * 30
        assert max(took for _, took in replies) < DEADLINE_S and texts_seen(pair[1]) >= 30
    finally:
        stop(gw.proc)


def test_cache_shared_only_between_declared_equivalents(failover_gw: Gateway, fresh: tuple[StandIn, StandIn]) -> None:
    """B throttles (429, Retry-After 2 s): A computes vectors for v3 (one cache group) and v4 (none). Then
    A throttles for 30 s and requests are routed to B: v3 is served A's vectors from the cache, v4 never
    is: B computes them."""
    a, b = fresh
    run = uuid.uuid4().hex
    b.control(fail_rate=1, fail_modes=["429"], retry_after=2)
    for model in ("text-embedding-v3", "text-embedding-v4"):
        replies = asyncio.run(burst(failover_gw, model, [f"{model} {run} {i}" for i in range(5)]))
        assert [r.status_code for r, _ in replies] == [200] * 5
    assert texts_seen(a) == 10
    b.control(fail_rate=0)
    a.control(fail_rate=1, fail_modes=["429"], retry_after=30)
    time.sleep(2.5)  # B's Retry-After has passed
    for i in range(20):  # one by one: the first routed to A learns that A throttles
        r = failover_gw.post(OPENAI, json={"model": "text-embedding-v4", "input": [f"warm {run} {i}"]})
        assert r.status_code == 200
    b.reset()
    for model in ("text-embedding-v3", "text-embedding-v4"):
        replies = asyncio.run(burst(failover_gw, model, [f"{model} {run} {i}" for i in range(5)]))
        assert [r.status_code for r, _ in replies] == [200] * 5
    calls = [c for c in b.calls() if not c["failed"]]
    assert {c["model"] for c in calls} == {"text-embedding-v4"} and sum(c["n_items"] for c in calls) == 5


def test_two_gateways_sharing_a_redis_never_serve_each_others_vectors(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path: Path, fresh: tuple[StandIn, StandIn]
) -> None:
    """Each gateway's `openai` upstream points at a different server; they share a Redis and a namespace."""
    a, b = fresh
    namespace = "shared" + uuid.uuid4().hex[:8]
    started = []
    for standin, name in ((a, "one"), (b, "two")):
        (tmp_path / name).write_text(f"cache_namespace: {namespace}\n")
        env = {"OPENAI_BASE_URL": standin.openai_base}
        started.append(gateways.start(redis_url=redis_server.url, config=str(tmp_path / name), env=env))
    try:
        texts = [f"shared redis {uuid.uuid4().hex}"]
        for gw in started:
            r = gw.post(OPENAI, json={"model": "text-embedding-3-small", "input": texts}, timeout=30)
            assert r.status_code == 200
        assert texts_seen(a) == 1 and texts_seen(b) == 1
    finally:
        for gw in started:
            stop(gw.proc)


def test_traffic_splits_by_quota_and_no_deployment_passes_its_own(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path: Path, fresh: tuple[StandIn, StandIn]
) -> None:
    a, b = fresh
    models = {
        "paced-v4": {
            "upstream_model": "text-embedding-v4",
            "dimensions": [64],
            "default_dimension": 64,
            "deployments": [{"upstream": "ds-a", "rpm": QUOTA_A}, {"upstream": "ds-b", "rpm": QUOTA_B}],
        }
    }
    path = config(
        tmp_path / "paced.yaml",
        a,
        b,
        models=models,
        limits_window_s=WINDOW_S,
        upstream_queue_s=1.0,
        limits_timeout_s=1.0,
    )
    started = [gateways.start(redis_url=redis_server.url, config=path) for _ in range(3)]
    run_s, offer_per_s = 12.0, 3 * (QUOTA_A + QUOTA_B) / WINDOW_S
    statuses: list[int] = []

    async def offer() -> None:
        async with httpx.AsyncClient(timeout=30, headers=started[0].headers) as client:  # one team, three replicas

            async def one(i: int) -> None:
                body = {"model": "paced-v4", "input": f"paced {uuid.uuid4().hex}", "dimensions": 64}
                statuses.append((await client.post(started[i % 3].url + OPENAI, json=body)).status_code)

            t0, tasks = time.monotonic(), []
            for i in range(int(run_s * offer_per_s)):
                await asyncio.sleep(max(0.0, t0 + i / offer_per_s - time.monotonic()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

    try:
        asyncio.run(offer())
    finally:
        for gw in started:
            stop(gw.proc)
    seen = {}
    for name, standin, quota in (("a", a, QUOTA_A), ("b", b, QUOTA_B)):
        calls = sorted(c["t"] for c in standin.calls() if c["model"] == "text-embedding-v4")
        busiest = max(sum(1 for u in calls if t <= u < t + WINDOW_S) for t in calls)
        assert busiest <= quota, f"{name}: {busiest} calls within {WINDOW_S}s (quota {quota})"
        assert len(calls) >= 0.7 * run_s / WINDOW_S * quota, f"{name}: its quota is used, not wasted"
        seen[name] = len(calls)
    assert 1.4 <= seen["a"] / seen["b"] <= 2.8, seen  # the split follows the quotas (2:1)
    assert set(statuses) <= {200, 429} and statuses.count(429) >= len(statuses) / 2
