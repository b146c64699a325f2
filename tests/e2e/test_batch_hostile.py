"""Shapes of the Files and Batch APIs that one client could use against the process, each tried on a real
gateway (auth on, hot cache on, Redis, local storage) with the default job settings:

- a small input file whose lines each ask for 2,048 vectors: a batch's chunk holds its answers until it is
  written, so a chunk is cut at one request's worth of items and vectors, not only at its lines and bytes
  (the gateway's peak resident memory, VmHWM, reset before the batch);
- hundreds of downloads of a large file (GET /v1/files/{id}/content) that are never read: each holds up to
  two chunks of it, so they take that from the memory budget (a gateway with a small budget, so that a few
  hundred fill it) and the rest wait, then get 503, rather than growing the process.
"""

from __future__ import annotations

import socket
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


@pytest.fixture(scope="module")
def tight(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway whose memory budget 300 stalled downloads would pass 9 times over (16 MiB: 32 downloads of
    two 256 KiB chunks), waiting 1 s for it (not 5: the test's time)."""
    tmp = tmp_path_factory.mktemp("hostile-tight")
    server = start_redis(tmp / "redis")
    cfg = tmp / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}}, jobs={"storage_dir": str(tmp / "files")})
    env = {"MEMORY_BUDGET_BYTES": str(16 * MB), "MEMORY_WAIT_S": "1"}
    g = gateways.start(redis_url=server.url, config=str(cfg), env=env)
    yield g, keys["alpha"]
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


def test_downloads_never_read_are_held_within_the_memory_budget(tight: tuple[Gateway, str]) -> None:
    """300 downloads of a 16 MB file, none read past its status line (each reader's socket buffer 4 KiB).
    Unbudgeted, each held about 0.6 MB of the gateway (the chunk in the transport's buffer and the next one
    read): its peak memory rose by ~180 MB. Budgeted, 32 are answered and the others get 503 after the wait;
    the peak rose by ~25 MB."""
    g, key = tight
    c = client(g, key)
    f = c.files.create(file=("big.jsonl", (b"x" * 1023 + b"\n") * (16 * 1024)), purpose="batch")
    host, port = g.url.removeprefix("http://").split(":")
    pid = g.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kib(pid, "VmHWM")
    request = f"GET /v1/files/{f.id}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    readers: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect((host, int(port)))
            s.sendall(request.encode())
            readers.append(s)
        statuses = [s.recv(12)[9:12] for s in readers]  # b"200" or b"503" (after the budget's wait)
        grown_mb = (status_kib(pid, "VmHWM") - before) / 1024
    finally:
        for s in readers:
            s.close()
    served, refused = statuses.count(b"200"), statuses.count(b"503")
    assert served + refused == len(readers), statuses
    assert served <= 32 and refused >= len(readers) - 32, (served, refused)
    assert grown_mb < 80, f"{served} stalled downloads raised the gateway's peak memory by {grown_mb:.0f} MB"
    assert c.files.content(f.id).content.count(b"\n") == 16 * 1024  # once they are gone, a download is whole
