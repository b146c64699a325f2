"""The memory burst of issue 16: requests of 1.8 KB naming 21 images of 3 MB each, with media fetching
on. Four of them at once, then again: the gateway's resident memory (from /proc: VmRSS before and after,
VmHWM for the peak) stays within its memory budget plus a margin, what it holds after the burst comes
back close to where it started, and every request gets its vectors or a 503 with Retry-After (none
times out). Default settings except the fetcher's allowed origin and timeout."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.imageserver import JPEG_BYTES, ImageServer
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, StandIn

MB = 1024 * 1024
IMAGES = 21
IMAGE_BYTES = 3 * MB
BUDGET = 384 * MB  # the default of memory_budget_bytes
MODEL = "tongyi-embedding-vision-plus"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def image(seed: int) -> bytes:
    """3 MB that sniff as JPEG (the stand-in and the gateway check formats by their magic bytes)."""
    filler = bytes([seed % 251]) * (IMAGE_BYTES - len(JPEG_BYTES))
    return JPEG_BYTES[:-2] + filler + JPEG_BYTES[-2:]


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageServer]:
    with ImageServer() as server:
        for i in range(4 * IMAGES):
            server.add(f"/img{i}.jpg", image(i), content_type="image/jpeg")
        yield server


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, origin: ImageServer) -> Gateway:
    env = {
        "MEDIA_FETCH": "true",
        "MEDIA_FETCH_ALLOW_HOSTS": json.dumps([origin.netloc]),
        # The origin is a Python thread of the test process: on a loaded 2-core machine one of its 3 MB answers
        # once took over the default 10 s (a 400 naming the URL, as it should). The bound under test is memory.
        "MEDIA_FETCH_TIMEOUT_S": "60",
        # Upstream calls of 10 images (the stand-in, like DashScope, refuses request bodies over 64 MB).
        "MODELS": json.dumps({MODEL: {"max_batch": 10}}),
    }
    return gateways.start(env=env)


def burst(gw: Gateway, origin: ImageServer, salt: str) -> list[httpx.Response]:
    def one(k: int) -> httpx.Response:
        urls = [origin.url(f"/img{k * IMAGES + i}.jpg") + f"?{salt}" for i in range(IMAGES)]
        body = {"model": MODEL, "input": [{"image": u} for u in urls], "dimensions": 64}
        assert len(json.dumps(body)) < 4096
        return gw.post("/v1/embeddings", json=body, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(4)))


def test_four_requests_of_21_images_of_3_mb_stay_within_the_budget(
    gw: Gateway, origin: ImageServer, standin: StandIn
) -> None:
    pid = gw.proc.pid
    small = {"model": MODEL, "input": [{"image": origin.url("/img0.jpg") + "?warm"}], "dimensions": 64}
    assert gw.post("/v1/embeddings", json=small, timeout=60).status_code == 200
    before = status_kib(pid, "VmRSS")
    statuses = []
    for _ in range(2):
        answers = burst(gw, origin, uuid.uuid4().hex[:8])
        for r in answers:
            assert r.status_code in (200, 503), r.text[:300]
            if r.status_code == 503:
                assert r.headers.get("retry-after") and r.json()["error"]["code"] == "memory_budget", r.text
            else:
                assert len(r.json()["data"]) == IMAGES
        statuses += [r.status_code for r in answers]

    def given_back() -> int:  # the bodies and images freed: polled for (was a fixed 2 s)
        kib = status_kib(pid, "VmRSS")
        assert (kib - before) * 1024 < 64 * MB, (before, kib)
        return kib

    after = eventually(given_back, within=10)
    peak = status_kib(pid, "VmHWM")
    print(f"RSS before {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, after {after / 1024:.0f} MiB; {statuses}")
    assert statuses.count(200) >= 2, statuses
    assert (peak - before) * 1024 < BUDGET + 128 * MB, (before, peak)
