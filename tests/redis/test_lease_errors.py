"""Issue 19, item 6: a lease claim that fails (the first Redis write of a miss) counts in
`gateway_redis_errors_total{op="lease"}` as it opens the cache bypass; the request is still answered.

The Redis is a real redis-server turned into a replica of a master that does not exist: it answers reads
(a miss) and refuses every write (READONLY), as a Redis left behind by a failover would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from app.cache.hot import HotCache
from app.cache.redis import RedisCache
from app.metrics import Metrics
from app.redis.link import single
from bench.procs import free_port
from tests.support.misspath import miss_path
from tests.support.processes import RedisServer, start_redis, stop
from tests.unit.test_service import FakeUpstream, as_arrays, expected, request


@pytest.fixture
def readonly_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "replica")
    redis.Redis(port=server.port).execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    yield server
    stop(server.proc)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


async def test_a_failed_lease_claim_is_counted_and_the_miss_still_answered(readonly_redis: RedisServer) -> None:
    with pytest.raises(redis.ReadOnlyError):  # the premise: reads answered, writes refused
        redis.Redis(port=readonly_redis.port).set("probe", b"x")
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    shared = RedisCache(single(readonly_redis.url, 1.0, 4), ttl_s=60, timeout_s=1.0, retry_after_s=30, metrics=metrics)
    up = FakeUpstream()
    svc = miss_path({"fake": up}, metrics, cache=HotCache(shared, 1 << 20))
    assert sample(metrics, "gateway_redis_errors_total", op="lease") == 0
    result = await svc.embed(None, request(["a"]))
    np.testing.assert_array_equal(as_arrays(result.vectors)[0], expected(["a"])[0])
    assert up.batches == [["a"]]
    assert sample(metrics, "gateway_redis_errors_total", op="read") == 0  # the read was answered
    assert sample(metrics, "gateway_redis_errors_total", op="lease") == 1  # the claim was refused: counted
    assert shared.breaker.is_open  # and the cache stands aside, as before
    await shared.close()
