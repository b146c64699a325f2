"""A batch job runs below interactive traffic: against a model with a small upstream quota, interactive
requests at a steady rate are measured with no job, then while a job runs flat out on the same model, in
one run, side by side. The job must not cause a single 429 and may add at most one quota slot's spacing to
interactive p95 (it takes only slots that are free now, so an interactive call arriving just after waits
for the next one; p95 of 40 calls is the second slowest: the slowest alone is one scheduler stall away on
a loaded machine, 0.52 s once in CI at load 4.5 against 0.11 s alone); the job still advances on the idle
quota, and the upstream never sees more than its quota in any window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from openai import OpenAI

from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, StandIn
from tests.support.teamkit import jobs_gateway

WINDOW_S, QUOTA = 2.0, 20  # upstream calls per window: one every 0.1 s
SPACING_S = WINDOW_S / QUOTA
RATE, PHASE_S = 4.0, 10.0  # interactive requests per second (40% of the quota), seconds per phase
MODEL = "paced-v4"


@pytest.fixture(scope="module")
def paced(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    model = {"upstream": "dashscope", "upstream_model": "text-embedding-v4", "dimensions": [64],
             "default_dimension": 64, "rpm": QUOTA}  # fmt: skip
    with jobs_gateway(gateways, tmp_path_factory.mktemp("priority"), {"alpha": {}}, jobs={"chunk_lines": 100},
                      limits_window_s=WINDOW_S, upstream_queue_s=1.0, models={MODEL: model}) as j:  # fmt: skip
        yield j.gw, j.keys["alpha"]


async def interactive(gw: Gateway, key: str, salt: str) -> tuple[list[float], int]:
    """PHASE_S seconds of RATE requests per second, each a new text (a miss): latencies of the 200s, 429s."""
    latencies: list[float] = []
    refused = 0
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {key}"}) as client:

        async def one(i: int) -> None:
            nonlocal refused
            t0 = time.monotonic()
            r = await client.post(gw.url + "/v1/embeddings", json={"model": MODEL, "input": f"{salt} q{i}"})
            if r.status_code == 429:
                refused += 1
            else:
                assert r.status_code == 200, r.text
                latencies.append(time.monotonic() - t0)

        start, tasks = time.monotonic(), []
        for i in range(int(PHASE_S * RATE)):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return latencies, refused


def p95(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def test_a_job_flat_out_leaves_interactive_latency_and_429s_alone(paced: tuple[Gateway, str], standin: StandIn) -> None:
    gw, key = paced
    standin.control(latency_ms=20)
    c = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    try:
        alone, refused_alone = asyncio.run(interactive(gw, key, uuid.uuid4().hex))
        salt = uuid.uuid4().hex
        lines = (orjson.dumps({"custom_id": f"j{i}", "method": "POST", "url": "/v1/embeddings",
                               "body": {"model": MODEL, "input": f"{salt} doc {i}"}}) for i in range(5000))  # fmt: skip
        f = c.files.create(file=("job.jsonl", b"\n".join(lines)), purpose="batch")
        batch = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
        # the job under way (some lines done) before the interactive traffic is measured again
        before = eventually(lambda: c.batches.retrieve(batch.id).request_counts.completed, within=30, interval=0.1)  # type: ignore[union-attr]
        t0 = time.time()
        shared, refused_shared = asyncio.run(interactive(gw, key, uuid.uuid4().hex))
        t1 = time.time()
        after = c.batches.retrieve(batch.id).request_counts.completed  # type: ignore[union-attr]
        c.batches.cancel(batch.id)
    finally:
        standin.control(latency_ms=0)
    print(f"interactive alone: p95 {p95(alone):.3f}s, {refused_alone} x 429; with the job: p95 {p95(shared):.3f}s, "
          f"{refused_shared} x 429; job lines done meanwhile {after - before}")  # fmt: skip
    assert refused_alone == 0 and refused_shared == 0
    assert p95(shared) <= p95(alone) + SPACING_S + 0.25  # one slot's spacing, plus a loaded machine's noise
    assert after - before >= 100  # the job used the idle quota
    calls = sorted(x["t"] for x in standin.calls() if x["model"] == "text-embedding-v4" and t0 - 1 <= x["t"] <= t1)
    busiest = max(sum(1 for u in calls if t <= u < t + WINDOW_S) for t in calls)
    assert busiest <= QUOTA
