"""The OpenAI Batch API for embeddings, through the openai SDK unchanged, against real gateway processes
(auth on, hot cache on, Redis) and the stand-in upstream: a 5,000-line file with a third of its texts
already cached and some invalid lines completes with exact output and error files, and only the distinct
uncached texts go upstream; a cancelled batch keeps its partial output; another team sees nothing."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from bench.standin import canonical_digest, expected_vector
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, clean_env
from tests.support.teamkit import jobs_gateway

MODEL, DIM = "text-embedding-v4", 64
LINES, DISTINCT, CACHED = 5000, 3000, 1000


@pytest.fixture(scope="module")
def setup(
    gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, dict[str, str], RedisServer, Path]]:
    jobs = {"chunk_lines": 500, "heartbeat_s": 3, "sweep_s": 1}
    with jobs_gateway(gateways, tmp_path_factory.mktemp("batch"), {"alpha": {}, "beta": {}}, jobs=jobs) as j:
        yield j.gw, j.keys, j.redis, j.config


def client(gw: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)


def request_line(i: int, text: str) -> dict[str, Any]:
    body = {"model": MODEL, "input": text, "dimensions": DIM, "encoding_format": "float" if i % 2 else "base64"}
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}


# line number -> (the raw line, a word its error must contain)
BAD: dict[int, tuple[bytes, str]] = {
    7: (b"{not json", "JSON"),
    1234: (orjson.dumps({"method": "POST", "url": "/v1/embeddings", "body": {}}), "custom_id"),
    2000: (orjson.dumps({"custom_id": "bad-url", "method": "POST", "url": "/v1/chat/completions", "body": {}}), "url"),
    3001: (orjson.dumps({"custom_id": "bad-dim", "method": "POST", "url": "/v1/embeddings",
                         "body": {"model": MODEL, "input": "x", "dimensions": 7}}), "dimensions"),
    4321: (orjson.dumps({"custom_id": "no-input", "method": "POST", "url": "/v1/embeddings",
                         "body": {"model": MODEL}}), "input"),
    4999: (orjson.dumps({"custom_id": "bad-model", "method": "POST", "url": "/v1/embeddings",
                         "body": {"model": "no-such-model", "input": "x"}}), "model"),
}  # fmt: skip


def wait_status(c: OpenAI, bid: str, statuses: set[str], deadline_s: float) -> Any:
    """The batch once its status is one of `statuses`, and the (status, lines done) seen on the way."""
    seen: list[tuple[str, int]] = []

    def reached() -> Any:
        b = c.batches.retrieve(bid)
        seen.append((b.status, b.request_counts.completed if b.request_counts else 0))
        assert b.status in statuses, f"batch {bid} still {seen[-1]}"
        return b

    return eventually(reached, within=deadline_s, interval=0.3), seen


def vector_of(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def test_batch_completes_cache_first_with_exact_output_and_error_files(setup: Any, standin: StandIn) -> None:
    gw, keys, *_ = setup
    c = client(gw, keys["alpha"])
    salt = uuid.uuid4().hex[:8]
    texts = [f"{salt} document number {i}" for i in range(DISTINCT)]
    for start in range(0, CACHED, 100):  # a third of the texts embedded (cached) before the batch
        c.embeddings.create(model=MODEL, input=texts[start : start + 100], dimensions=DIM)
    lines = [BAD[i][0] if i in BAD else orjson.dumps(request_line(i, texts[i % DISTINCT])) for i in range(LINES)]
    standin.reset()

    f = c.files.create(file=("reindex.jsonl", b"\n".join(lines) + b"\n"), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and c.files.retrieve(f.id).id == f.id
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h",
                         metadata={"job": "reindex"})  # fmt: skip
    assert b.status in ("validating", "in_progress") and b.metadata == {"job": "reindex"}
    done, _ = wait_status(c, b.id, {"completed", "failed", "cancelled"}, 180)
    assert done.status == "completed", done
    assert done.request_counts.total == LINES
    assert done.request_counts.completed == LINES - len(BAD) and done.request_counts.failed == len(BAD)

    out = [orjson.loads(x) for x in c.files.content(done.output_file_id).content.splitlines()]
    assert len(out) == LINES - len(BAD)
    for line in out:
        i = int(line["custom_id"].split("-")[1])
        resp = line["response"]
        assert line["error"] is None and resp["status_code"] == 200 and resp["request_id"]
        got = vector_of(resp["body"]["data"][0]["embedding"])
        np.testing.assert_allclose(got, expected_vector(MODEL, DIM, texts[i % DISTINCT]), rtol=1e-6, atol=1e-6)
        assert resp["body"]["model"] == MODEL
    assert sorted(int(x["custom_id"].split("-")[1]) for x in out) == [i for i in range(LINES) if i not in BAD]

    errors = [orjson.loads(x) for x in c.files.content(done.error_file_id).content.splitlines()]
    assert len(errors) == len(BAD)
    for line, (_, word) in zip(errors, [BAD[i] for i in sorted(BAD)], strict=True):
        text = orjson.dumps(line["error"] or line["response"]["body"]).decode()
        assert word in text, (word, line)
        if line["response"] is not None:
            assert line["response"]["status_code"] in (400, 404) and line["response"]["body"]["error"]["param"]

    # Only the distinct texts that were not cached went upstream, each once.
    uncached = {i % DISTINCT for i in range(LINES) if i not in BAD} - set(range(CACHED))
    mine = {canonical_digest(MODEL, DIM, t): t for t in texts}
    upstream = [d for d in standin.digests() if d in mine]
    assert len(upstream) == len(set(upstream)) == len(uncached)
    assert {mine[d] for d in upstream} == {texts[i] for i in uncached}


def test_another_team_sees_nothing_and_listing_pages(setup: Any) -> None:
    gw, keys, *_ = setup
    alpha, beta = client(gw, keys["alpha"]), client(gw, keys["beta"])
    f = alpha.files.create(file=("one.jsonl", orjson.dumps(request_line(0, "hello"))), purpose="batch")
    made = [alpha.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id
            for _ in range(3)]  # fmt: skip
    calls = (
        lambda: beta.files.retrieve(f.id),
        lambda: beta.files.content(f.id),
        lambda: beta.batches.retrieve(made[0]),
        lambda: beta.batches.cancel(made[0]),
        lambda: beta.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"),
    )
    for call in calls:
        with pytest.raises(NotFoundError):
            call()
    assert all(b.id not in made for b in beta.batches.list())
    page = alpha.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    listed = [b.id for b in page]  # the SDK follows `after` across pages
    assert listed[:3] == made[::-1]
    alpha.files.delete(f.id)
    with pytest.raises(NotFoundError):
        alpha.files.retrieve(f.id)


def test_files_list_pages_the_teams_own_files(setup: Any) -> None:
    """`files.list()` as the SDK pages it: the team's files only, newest first (or oldest with order=asc,
    files made in one second kept in their order), filtered by purpose, a deleted file gone."""
    gw, keys, *_ = setup
    alpha, beta = client(gw, keys["alpha"]), client(gw, keys["beta"])
    theirs = alpha.files.create(file=("theirs.jsonl", orjson.dumps(request_line(0, "x"))), purpose="batch").id
    before = {f.id for f in beta.files.list()}
    made = [beta.files.create(file=(f"{i}.jsonl", orjson.dumps(request_line(i, f"t{i}"))), purpose="batch").id
            for i in range(5)]  # fmt: skip
    page = beta.files.list(limit=2)
    assert [f.id for f in page.data] == made[:-3:-1] and page.has_more
    listed = [f.id for f in page if f.id not in before]  # the SDK follows `after` across pages
    assert listed == made[::-1]
    assert [f.id for f in beta.files.list(order="asc") if f.id not in before] == made
    assert theirs not in {f.id for f in beta.files.list()} and theirs in {f.id for f in alpha.files.list()}
    assert [f.id for f in beta.files.list(purpose="batch") if f.id not in before] == made[::-1]
    assert [f.id for f in beta.files.list(purpose="batch_output") if f.id in made] == []
    beta.files.delete(made[2])
    assert [f.id for f in beta.files.list(limit=1) if f.id not in before] == [made[4], made[3], made[1], made[0]]
    with pytest.raises(BadRequestError):
        beta.files.list(limit=0)


def test_cancel_midway_keeps_partial_output(setup: Any, standin: StandIn) -> None:
    gw, keys, *_ = setup
    c = client(gw, keys["alpha"])
    salt = uuid.uuid4().hex[:8]
    standin.control(latency_ms=150)
    try:
        body = b"\n".join(orjson.dumps(request_line(i, f"{salt} cancel me {i}")) for i in range(20_000))
        f = c.files.create(file=("big.jsonl", body), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")

        def lines_done() -> int:
            return c.batches.retrieve(b.id).request_counts.completed  # type: ignore[union-attr]

        eventually(lambda: lines_done() >= 1000, within=60, interval=0.2, what="1,000 lines done")
        cancelling = c.batches.cancel(b.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done, _ = wait_status(c, b.id, {"cancelled", "completed"}, 60)
    finally:
        standin.control(latency_ms=0)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    counts = done.request_counts
    assert 1000 <= counts.completed < 20_000 and counts.total == 20_000
    out = c.files.content(done.output_file_id).content.splitlines()
    assert len(out) == counts.completed


def test_operators_list_show_and_cancel_jobs(setup: Any, standin: StandIn) -> None:
    gw, keys, redis, cfg = setup
    c = client(gw, keys["alpha"])
    body = b"\n".join(orjson.dumps(request_line(i, f"{uuid.uuid4().hex} {i}")) for i in range(20_000))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = clean_env(REDIS_URL=redis.url)
        return subprocess.run([sys.executable, "-m", "app.cli", "jobs", "--config", str(cfg), *args],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip

    standin.control(latency_ms=150)  # the batch still runs when `cancel` comes (it once completed before)
    try:
        b = c.batches.create(input_file_id=c.files.create(file=("ops.jsonl", body), purpose="batch").id,
                             endpoint="/v1/embeddings", completion_window="24h")  # fmt: skip
        listed = cli("list")
        assert listed.returncode == 0 and b.id in listed.stdout and "alpha" in listed.stdout, listed
        shown = cli("show", b.id)
        assert shown.returncode == 0 and orjson.loads(shown.stdout)["team"] == "alpha"
        cancelled = cli("cancel", b.id)
        assert cancelled.returncode == 0 and orjson.loads(cancelled.stdout)["status"] == "cancelling", cancelled
        done, _ = wait_status(c, b.id, {"cancelled"}, 60)
    finally:
        standin.control(latency_ms=0)
    assert done.request_counts.completed < 20_000
    again = cli("cancel", b.id)
    assert again.returncode == 1 and "nothing to cancel" in again.stderr
    assert cli("show", "batch_nothing").returncode == 1
