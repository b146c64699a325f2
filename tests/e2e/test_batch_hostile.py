"""Shapes of the Files and Batch APIs that one client could use against the process, each tried on a real
gateway (auth on, hot cache on, Redis, local storage) with the default job settings:

- a small input file whose lines each ask for 2,048 vectors: a batch's chunk holds its answers until it is
  written, so a chunk is cut at one request's worth of items and vectors, not only at its lines and bytes
  (the gateway's peak resident memory, VmHWM, reset before the batch).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI

from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, start_redis, stop
from tests.support.teamkit import write_config

MB = 1024 * 1024
WIDE = "text-embedding-3-small"  # the stand-in's OpenAI route: 2,048 items per upstream call


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str, Path]]:
    tmp = tmp_path_factory.mktemp("hostile-jobs")
    server = start_redis(tmp / "redis")
    cfg = tmp / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}}, jobs={"storage_dir": str(tmp / "files")})
    g = gateways.start(redis_url=server.url, config=str(cfg))
    yield g, keys["alpha"], tmp / "files"
    stop(g.proc)
    stop(server.proc)


def client(g: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, timeout=120)


def finished(c: OpenAI, bid: str, within: float = 120) -> Any:
    def done() -> Any:
        b = c.batches.retrieve(bid)
        assert b.status in ("completed", "failed", "cancelled"), b.status
        return b

    return eventually(done, within=within, interval=0.2, what=f"batch {bid} finished")


def test_lines_of_2048_items_each_are_not_held_500_lines_at_a_time(gw: tuple[Gateway, str, Path]) -> None:
    """40 lines of the same 2,048 short texts at 256 dimensions: a 1.2 MB file, 81,920 vectors. Cut at 500
    lines (or 8 MB of input) alone, the whole file was one chunk and the gateway's peak memory rose by
    ~570 MB (its answers as JSON text, the items, the vectors); cut at one request's worth (one line here)
    it rose by ~45 MB."""
    g, key, _ = gw
    c = client(g, key)
    salt = uuid.uuid4().hex[:8]
    body = {"model": WIDE, "input": [f"{salt} {j}" for j in range(2048)], "dimensions": 256}
    lines = [orjson.dumps({"custom_id": f"w{i}", "method": "POST", "url": "/v1/embeddings", "body": body})
             for i in range(40)]  # fmt: skip
    f = c.files.create(file=("wide.jsonl", b"\n".join(lines)), purpose="batch")
    pid = g.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kib(pid, "VmHWM")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    grown_mb = (status_kib(pid, "VmHWM") - before) / 1024
    assert b.status == "completed" and b.request_counts.completed == 40, b  # type: ignore[union-attr]
    first = orjson.loads(c.files.content(b.output_file_id).content.split(b"\n", 1)[0])  # type: ignore[arg-type]
    assert len(first["response"]["body"]["data"]) == 2048
    assert grown_mb < 200, f"the batch raised the gateway's peak memory by {grown_mb:.0f} MB"
