"""Batches of one team do not hold every worker while another team's batch waits (jobs.team_max_running).

One gateway process whose worker runs 2 jobs at once; every upstream call takes 250 ms (the stand-in's
latency), and a batch is a chunk per line. Team alpha queues 4 batches of 4 lines (about 1 s each), then team
beta queues 1 batch of 1 line. All teams' batches wait in one first-in, first-out queue: with no cap, alpha's
first two hold both workers, its last two are next in the queue, and beta's batch starts after two of alpha's
have ended (and ends after them). With `team_max_running: 1`, alpha holds one worker at a time and beta's
batch runs on the other at once: it ends before any of alpha's second batch could. Every batch still ends
completed, each output right (nothing parked is lost).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openai import OpenAI

from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, StandIn
from tests.support.teamkit import jobs_gateway

LINES, BATCHES = 4, 4


@pytest.fixture(scope="module")
def fair(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, dict[str, str]]]:
    jobs = {"chunk_lines": 1, "concurrency": 2, "team_max_running": 1}
    with jobs_gateway(gateways, tmp_path_factory.mktemp("fairness"), {"alpha": {}, "beta": {}}, jobs=jobs) as j:
        yield j.gw, j.keys


def batch_of(c: OpenAI, texts: list[str]) -> str:
    lines = [
        orjson.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": "text-embedding-v4", "input": t, "dimensions": 64}})
        for i, t in enumerate(texts)
    ]  # fmt: skip
    f = c.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
    return c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id


def test_a_team_with_many_batches_leaves_a_worker_to_another_team(
    fair: tuple[Gateway, dict[str, str]], standin: StandIn
) -> None:
    g, keys = fair
    alpha = OpenAI(base_url=g.url + "/v1", api_key=keys["alpha"], max_retries=0, timeout=60)
    beta = OpenAI(base_url=g.url + "/v1", api_key=keys["beta"], max_retries=0, timeout=60)
    salt = uuid.uuid4().hex[:8]
    standin.control(latency_ms=250)
    try:
        ours = [batch_of(alpha, [f"{salt} a{b} {i}" for i in range(LINES)]) for b in range(BATCHES)]
        time.sleep(0.3)  # alpha's first batches have taken the workers
        theirs = batch_of(beta, [f"{salt} b"])

        def ended(c: OpenAI, bid: str) -> Any:
            b = c.batches.retrieve(bid)
            assert b.status in ("completed", "failed", "cancelled"), b.status
            return b

        beta_done = eventually(lambda: ended(beta, theirs), within=60, interval=0.05, what="beta's batch ended")
        alpha_done = sum(alpha.batches.retrieve(bid).status == "completed" for bid in ours)
        assert beta_done.status == "completed", beta_done
        # beta's one line took ~0.25 s on the free worker; alpha's first batch ~1 s, its second ~2 s
        assert alpha_done <= 1, f"{alpha_done} of alpha's batches ended before beta's one-line batch"
        out = [eventually(lambda bid=bid: ended(alpha, bid), within=90, interval=0.2, what=bid) for bid in ours]
    finally:
        standin.control(latency_ms=0)
    assert [b.status for b in out] == ["completed"] * BATCHES and all(b.request_counts.completed == LINES for b in out)
    lines = [orjson.loads(x) for x in beta.files.content(beta_done.output_file_id).content.splitlines()]
    assert [x["custom_id"] for x in lines] == ["l0"] and lines[0]["response"]["status_code"] == 200
