"""Issue 19, item 6 on a real redis-server: an entry of the right length holding NaN is a miss for the miss
path as create_app wires it (the hot cache in front of Redis, and Redis alone): fetched again, overwritten in
Redis and in the hot cache, counted, never served; the hot cache never keeps it."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from app.cache.checks import LEASE
from app.cache.hot import HotCache
from app.cache.redis import RedisCache
from app.cache.store import VectorCache
from app.metrics import Metrics
from app.redis.link import single
from tests.support.misspath import miss_path
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer
from tests.unit.test_service import DIM, FakeUpstream, as_arrays, expected, request


async def written(spy: redis.Redis, before: set[bytes]) -> bytes:
    """The one new vector key (the cache write lands just after the answer: polled, within a deadline; until
    then the key holds the fetch's lease)."""

    def new() -> list[bytes]:
        fresh = [k for k in spy.scan_iter(match="t:*", count=1000) if k not in before]
        return [k for k in fresh if not (spy.get(k) or LEASE).startswith(LEASE)]

    keys = await eventually_async(new, interval=0.01, what="the vector written to Redis")
    assert len(keys) == 1, keys
    return bytes(keys[0])


def refused(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("gateway_cache_invalid_total", {"reason": "non_finite"})
    assert value is not None
    return value


@pytest.mark.parametrize("hot", [True, False], ids=["hot-over-redis", "redis"])
async def test_a_nan_entry_in_redis_is_fetched_again_overwritten_and_never_served(
    redis_server: RedisServer, hot: bool
) -> None:
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    shared = RedisCache(single(redis_server.url, 1.0, 4), ttl_s=60, timeout_s=1.0, retry_after_s=5, metrics=metrics)
    cache: VectorCache = HotCache(shared, 1 << 20) if hot else shared
    up = FakeUpstream()
    svc = miss_path({"fake": up}, metrics, cache=cache)
    text = f"poisoned {uuid.uuid4().hex}"
    want = expected([text])[0].tobytes()
    spy = redis.Redis.from_url(redis_server.url)
    before = set(spy.scan_iter(match="t:*", count=1000))
    await svc.embed(None, request([text]))
    key = await written(spy, before)
    bad = np.frombuffer(want, dtype="<f4").copy()
    bad[DIM - 1] = np.nan
    spy.set(key, bad.tobytes(), keepttl=True)
    if isinstance(cache, HotCache):
        await cache.hot.close()  # another worker: it has not seen the key, and reads it from Redis
    up.batches.clear()

    result = await svc.embed(None, request([text]))
    assert up.batches == [[text]] and (result.hits, result.misses) == (0, 1)  # fetched again
    np.testing.assert_array_equal(as_arrays(result.vectors)[0], expected([text])[0])
    await eventually_async(lambda: spy.get(key) == want, interval=0.01)  # overwritten
    assert refused(metrics) >= 1
    if isinstance(cache, HotCache):
        assert cache.hot._data[key.decode()] == want  # the hot cache holds the good value, never the bad one
    counted = refused(metrics)
    again = await svc.embed(None, request([text]))
    assert again.hits == 1 and len(up.batches) == 1 and refused(metrics) == counted
    spy.close()
    await shared.close()
