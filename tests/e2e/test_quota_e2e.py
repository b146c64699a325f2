"""The upstream account's quota, shared by three gateway processes: clients offer three times the quota,
and the stand-in upstream (which timestamps every call it receives) never sees more than the quota in any
window. The window is shortened to WINDOW_S seconds (limits_window_s) so that several pass in the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, stop
from tests.support.teamkit import DS_TEXT, OPENAI, paced_model, write_config

WINDOW_S = 4.0
QUOTA = 8  # upstream calls per window
RUN_S = 12.0
OFFER_PER_S = 3 * QUOTA / WINDOW_S


@pytest.fixture(scope="module")
def paced(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    cfg = Path(tmp_path_factory.mktemp("quota")) / "gateway.yaml"
    write_config(
        cfg,
        {},
        limits_window_s=WINDOW_S,
        upstream_queue_s=1.0,
        limits_timeout_s=1.0,
        models=paced_model(QUOTA),
    )
    started = [gateways.start(redis_url=redis_server.url, config=str(cfg)) for _ in range(3)]
    yield started
    for g in started:
        stop(g.proc)


async def test_upstream_never_sees_more_than_its_quota(paced: list[Gateway], standin: StandIn) -> None:
    replies: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=30, headers=paced[0].headers) as client:  # one team, three replicas

        async def one(i: int) -> None:
            url = paced[i % 3].url
            if i % 2:
                body = {"model": "paced-v4", "input": {"texts": [f"text {i}"]}, "parameters": {"dimension": 64}}
                replies.append(await client.post(url + DS_TEXT, json=body))
            else:
                body = {"model": "paced-v4", "input": f"text {i}", "dimensions": 64}
                replies.append(await client.post(url + OPENAI, json=body))

        t0 = time.monotonic()
        tasks = []
        for i in range(int(RUN_S * OFFER_PER_S)):
            await asyncio.sleep(max(0.0, t0 + i / OFFER_PER_S - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)

    calls = sorted(c["t"] for c in standin.calls() if c["model"] == "text-embedding-v4")
    busiest = max(sum(1 for u in calls if t <= u < t + WINDOW_S) for t in calls)
    assert busiest <= QUOTA, f"{busiest} upstream calls within {WINDOW_S}s"
    assert len(calls) >= 0.7 * RUN_S / WINDOW_S * QUOTA  # and the quota is used, not wasted
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(ok) == len(calls) and len(ok) + len(refused) == len(replies)
    assert len(refused) >= len(replies) / 2  # offered three times the quota
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        body = r.json()
        if r.url.path == DS_TEXT:
            assert body["code"] == "Throttling.RateQuota"  # what DashScope SDK users know
        else:
            assert body["error"]["type"] == "rate_limit_error"
