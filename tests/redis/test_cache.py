"""VectorCache: the in-process LRU, and RedisCache against a real redis-server, including a Redis that
stalls (SIGSTOP) or dies: misses within the timeout, never a hang, one log line per state change."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from app.cache.lru import ENTRY_OVERHEAD, MemoryCache, entry_bytes
from app.cache.redis import RedisCache
from app.flights.leases import RedisLeases
from app.metrics import Metrics
from app.redis.bypass import Bypass
from app.redis.link import single
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer, stop

LOGGER = "embedding_gateway.breaker"


async def test_memory_cache_is_an_lru_bounded_by_bytes() -> None:
    def entry(n: int) -> int:  # an entry of a one-character key and an n-byte value, as counted
        return entry_bytes("k", b"v" * n)

    assert entry(30) == 1 + 30 + ENTRY_OVERHEAD  # the key, the value, the objects' and the slot's overhead
    cache = MemoryCache(max_bytes=3 * entry(30) + 20)
    await cache.set_many([("a", b"a" * 30), ("b", b"b" * 30), ("c", b"c" * 30)])
    assert await cache.get_many(["a"]) == [b"a" * 30]  # a is now the most recent
    await cache.set_many([("d", b"d" * 30)])  # past the bound: the least recent (b) goes
    assert await cache.get_many(["a", "b", "c", "d"]) == [b"a" * 30, None, b"c" * 30, b"d" * 30]
    await cache.set_many([("a", b"A" * 10)])  # replacing a value counts its new size only
    assert cache._bytes == 2 * entry(30) + entry(10)
    await cache.set_many([("huge", b"h" * cache.max_bytes)])  # larger than the whole cache: not kept, nothing evicted
    assert await cache.get_many(["huge", "c"]) == [None, b"c" * 30]
    await cache.set_many([("e", b"e" * 60)])  # order was d, a, c (c just read): d goes
    assert await cache.get_many(["a", "c", "d", "e"]) == [b"A" * 10, b"c" * 30, None, b"e" * 60]
    assert cache._bytes == entry(10) + entry(30) + entry(60) <= cache.max_bytes


def test_breaker_opens_for_retry_after_and_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    now = [100.0]
    breaker = Bypass("redis cache", 2.0, None, clock=lambda: now[0])
    assert breaker.allows
    for _ in range(5):
        breaker.failed("TimeoutError")
    assert not breaker.allows
    now[0] += 1.9
    assert not breaker.allows
    now[0] += 0.2
    assert breaker.allows  # one probe may go
    breaker.failed("TimeoutError")
    assert not breaker.allows
    now[0] += 2.1
    breaker.succeeded()
    breaker.succeeded()
    assert breaker.allows
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "unavailable (TimeoutError)" in messages[0] and "available again" in messages[1]


@pytest_asyncio.fixture
async def cache(redis_server: RedisServer) -> AsyncIterator[tuple[RedisCache, str]]:
    c = RedisCache(single(redis_server.url, 0.25, 8), ttl_s=120, timeout_s=0.25, retry_after_s=1.0)
    prefix = f"test-cache-{uuid.uuid4().hex}:"
    yield c, prefix
    keys = [k async for k in c.link.client.scan_iter(match=prefix + "*")]
    if keys:
        await c.link.client.delete(*keys)
    await c.close()


async def test_redis_round_trip_with_ttl_and_float32_bytes(cache: tuple[RedisCache, str]) -> None:
    c, prefix = cache
    vectors = {f"{prefix}{i}": np.arange(i, i + 8, dtype="<f4").tobytes() for i in range(5)}
    await c.set_many(list(vectors.items()))
    keys = [*vectors, prefix + "absent"]
    assert await c.get_many(keys) == [*vectors.values(), None]
    assert await c.get_many([]) == []
    for key in vectors:
        assert 110 <= await c.link.client.ttl(key) <= 120
        assert await c.link.client.strlen(key) == 4 * 8
    assert await c.ping()


async def test_one_round_trip_each_way(cache: tuple[RedisCache, str], redis_server: RedisServer) -> None:
    c, prefix = cache
    spy = aioredis.Redis.from_url(redis_server.url)
    before = await spy.info("commandstats")
    await c.set_many([(f"{prefix}{i}", b"x" * 4) for i in range(20)])
    await c.get_many([f"{prefix}{i}" for i in range(20)])
    after = await spy.info("commandstats")
    await spy.aclose()

    def calls(stats: dict[str, dict[str, int]], name: str) -> int:
        return stats.get(f"cmdstat_{name}", {}).get("calls", 0)

    assert calls(after, "mget") - calls(before, "mget") == 1
    assert calls(after, "get") - calls(before, "get") == 0
    assert calls(after, "set") - calls(before, "set") == 20  # one pipeline, 20 SET EX


async def test_a_lease_reads_as_a_miss_and_the_vectors_write_ends_it(
    cache: tuple[RedisCache, str], redis_server: RedisServer
) -> None:
    """A miss's lease lives in its vector's key (flights/leases.py): the cache reads it as a miss (never as
    an invalid value), and the vector's write, one pipelined SET EX per key and nothing else, replaces it:
    no command of the lease's own. Another replica polling sees the lease, then the vector."""
    c, prefix = cache
    metrics = Metrics(CollectorRegistry())
    c.metrics = metrics
    leases = RedisLeases(c.link, c.breaker, 1.0)
    vectors = [(f"{prefix}{{v{i}}}", np.full(4, i, dtype="<f4").tobytes()) for i in range(3)]
    keys = [k for k, _ in vectors]
    assert await leases.claim(keys, 10) == (set(keys), {})
    assert await c.get_many(keys) == [None, None, None]
    invalid = [s.value for s in metrics.cache_invalid.collect()[0].samples if s.name.endswith("_total")]
    assert invalid and not any(invalid)  # a lease is not an invalid value
    other = RedisLeases(c.link, c.breaker, 1.0)
    assert await other.claim(keys, 10) == (set(), {})  # held: the other replica waits
    assert await other.poll(keys) == (set(keys), {})
    spy = aioredis.Redis.from_url(redis_server.url)
    before = await spy.info("commandstats")
    await c.set_many(vectors)
    after = await spy.info("commandstats")
    await spy.aclose()
    commands = {k: v["calls"] - before.get(k, {}).get("calls", 0) for k, v in after.items() if k != "cmdstat_info"}
    assert {k: n for k, n in commands.items() if n} == {"cmdstat_set": 3}
    assert await c.get_many(keys) == [v for _, v in vectors]
    assert await other.poll(keys) == (set(), dict(vectors))
    for key in keys:
        assert 110 <= await c.link.client.ttl(key) <= 120  # the vector's expiry, not the lease's


async def timed(coro: object) -> tuple[object, float]:
    t0 = time.monotonic()
    value = await coro  # type: ignore[misc]
    return value, time.monotonic() - t0


async def test_paused_redis_costs_one_timeout_then_is_skipped_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    c = RedisCache(single(own_redis.url, 0.25, 8), ttl_s=60, timeout_s=0.25, retry_after_s=1.0)
    try:
        await c.set_many([("k1", b"v1")])
        assert await c.get_many(["k1"]) == [b"v1"]

        own_redis.pause()
        value, took = await timed(c.get_many(["k1", "k2"]))
        assert value == [None, None]
        assert took < 1.5  # the timeout is 0.25 s: generous margin for a shared machine
        t0 = time.monotonic()
        for _ in range(20):  # the breaker is open: no Redis call, no wait (20 timeouts would be 10 s)
            assert await c.get_many(["k1"]) == [None]
            await c.set_many([("k3", b"v3")])
        assert time.monotonic() - t0 < 0.25
        assert not await c.ping()

        own_redis.resume()

        async def back() -> bool:
            return await c.get_many(["k1"]) == [b"v1"]

        await eventually_async(back, interval=0.1, what="the cache back after Redis resumed")
        await c.set_many([("k4", b"v4")])
        assert await c.get_many(["k4", "k3"]) == [b"v4", None]  # k3 was dropped while Redis was away
    finally:
        await c.close()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2, messages
    assert "unavailable" in messages[0] and "available again" in messages[1]
    assert "Traceback" not in caplog.text


async def test_a_read_waits_the_caches_timeout_when_the_links_is_longer(own_redis: RedisServer) -> None:
    """The single server's reads go through the link's Turn, bounded by the link's deadline: a link opened
    with a longer timeout than the cache's still answers a read within the cache's."""
    c = RedisCache(single(own_redis.url, 5.0, 8), ttl_s=60, timeout_s=0.25, retry_after_s=1.0)
    try:
        await c.set_many([("k1", b"v1")])
        own_redis.pause()
        value, took = await timed(c.get_many(["k1"]))
        assert value == [None]
        assert took < 1.5  # the link's 5 s would be the wait without the cache's own timer
    finally:
        own_redis.resume()
        await c.close()


@pytest.mark.parametrize("link_s", [0.25, 5.0])
async def test_a_write_to_a_paused_redis_ends_within_the_caches_timeout(own_redis: RedisServer, link_s: float) -> None:
    """A single server's writes go through the link's Turn: within its deadline when that is the cache's
    timeout (as wired: no timer of the write's own), within the cache's timer when the link's is longer. The
    write ends, counted as a failed write, and the cache stands aside."""
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    c = RedisCache(single(own_redis.url, link_s, 8), ttl_s=60, timeout_s=0.25, retry_after_s=5.0, metrics=metrics)
    try:
        await c.set_many([("k1", b"v1")])
        own_redis.pause()
        _, took = await timed(c.set_many([("k2", b"v2")]))
        assert took < 1.5  # 0.25 s: generous margin for a shared machine
        assert metrics.registry.get_sample_value("gateway_redis_errors_total", {"op": "write"}) == 1
        assert c.breaker.is_open
    finally:
        own_redis.resume()
        await c.close()


async def test_dead_redis_is_a_fast_miss(own_redis: RedisServer) -> None:
    c = RedisCache(single(own_redis.url, 0.25, 8), ttl_s=60, timeout_s=0.25, retry_after_s=0.2)
    try:
        await c.set_many([("k1", b"v1")])
        stop(own_redis.proc)
        for _ in range(5):
            value, took = await timed(c.get_many(["k1"]))
            assert value == [None] and took < 1.0
            _, took = await timed(c.set_many([("k1", b"v2")]))
            assert took < 1.0
            await asyncio.sleep(0.25)  # past retry_after: each round probes the dead server again
    finally:
        await c.close()
