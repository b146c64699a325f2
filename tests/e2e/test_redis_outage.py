"""Redis stopped mid-run: a gateway with its own redis-server keeps answering 200 with the right vectors
while Redis is paused (SIGSTOP) and after it is killed, within a bounded time; caching resumes when Redis
is back (resumed, or a new server on the same port). With the hot cache off (every lookup reaches Redis) and
on, as users run it: then what the worker holds is served through the outage, and only the rest is
answered from upstream."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from bench.standin import expected_vector
from tests.support.polling import eventually
from tests.support.processes import TLS, Gateway, GatewayFactory, RedisServer, StandIn, start_redis, stop

MODEL = "text-embedding-v4"
DIM = 64
BOUND_S = 2.0  # per request; Redis timeout 0.25 s, the stand-in answers in milliseconds


@pytest.fixture(params=[False, True], ids=["hot-cache-off", "hot-cache-on"])
def outage(
    gateways: GatewayFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[RedisServer, Gateway, Path, bool]]:
    server = start_redis(tmp_path / "redis")
    env = {"REDIS_TIMEOUT_S": "0.25", "REDIS_RETRY_AFTER_S": "0.5"}
    if not request.param:
        env["CACHE_HOT_MAX_BYTES"] = "0"  # every lookup reaches Redis: the outage is felt by every item
    gw = gateways.start(redis_url=server.url, env=env)
    yield server, gw, tmp_path, request.param
    stop(gw.proc)
    server.resume()
    stop(server.proc)


def embed(gw: Gateway, texts: list[str]) -> httpx.Response:
    t0 = time.monotonic()
    resp = gw.post("/v1/embeddings", json={"model": MODEL, "input": texts, "dimensions": DIM}, timeout=BOUND_S * 3)
    took = time.monotonic() - t0
    assert resp.status_code == 200, resp.text
    assert took < BOUND_S, f"took {took:.2f}s"
    for row, text in zip(resp.json()["data"], texts, strict=True):
        np.testing.assert_array_equal(np.asarray(row["embedding"], dtype=np.float32), expected_vector(MODEL, DIM, text))
    return resp


def hits(resp: httpx.Response) -> int:
    return int(resp.headers["x-cache-hits"])


def vectors_in(server: RedisServer) -> int:
    """The vectors stored in this Redis (the hot cache would answer a repeated item either way)."""
    with redis.Redis.from_url(server.url) as r:
        return sum(1 for k in r.scan_iter(count=1000) if r.type(k) == b"string" and r.strlen(k) == 4 * DIM)


def wait_for_cache(gw: Gateway, server: RedisServer, deadline_s: float = 15.0) -> None:
    """Caching is back when the vector of a new item lands in Redis."""
    before = vectors_in(server)

    def cached() -> bool:
        embed(gw, ["probe " + uuid.uuid4().hex])
        return vectors_in(server) > before

    eventually(cached, within=deadline_s, interval=0.2, what="caching resumed")


def test_paused_then_killed_redis_never_fails_a_request(
    outage: tuple[RedisServer, Gateway, Path, bool], standin: StandIn
) -> None:
    server, gw, tmp_path, hot = outage
    held = 3 if hot else 0  # the warm items this worker holds in its hot cache
    salt = uuid.uuid4().hex
    warm = [f"warm {i} {salt}" for i in range(3)]
    embed(gw, warm)
    assert hits(embed(gw, warm)) == 3

    server.pause()
    for i in range(6):  # items cached before the stall and a new one: what is not held comes from upstream
        resp = embed(gw, [*warm, f"paused {i} {salt}"])
        assert (hits(resp), resp.headers["x-cache-misses"]) == (held, str(4 - held))
    t0 = time.monotonic()
    ready = httpx.get(gw.url + "/readyz", timeout=BOUND_S * 3, verify=TLS)  # TLS: no CA bundle load in the time
    assert time.monotonic() - t0 < BOUND_S
    cache = ready.json()["cache"]
    assert ready.status_code == 200 and cache["backend"] == "redis" and cache["ok"] is False
    assert cache["shared"] is False and cache["cause"]  # not shared right now, and why

    server.resume()
    wait_for_cache(gw, server)
    assert hits(embed(gw, warm)) == 3  # what was stored before the stall is still served

    stop(server.proc, signal.SIGKILL)
    for i in range(6):
        assert hits(embed(gw, [*warm, f"killed {i} {salt}"])) == held
        time.sleep(0.1)  # spans the breaker's retry period: probes of a dead server stay fast

    reborn = start_redis(tmp_path / "redis2", port=server.port)
    try:
        wait_for_cache(gw, reborn)
        assert hits(embed(gw, warm)) == held  # a new, empty Redis: only the worker's hot cache has them
        assert hits(embed(gw, warm)) == 3
    finally:
        stop(reborn.proc)

    log = gw.output()
    assert "Traceback" not in log
    down, up = log.count("redis cache unavailable"), log.count("redis cache available again")
    assert 1 <= down <= 3 and up >= 1 and down - up in (0, 1), (down, up)  # once per state change
