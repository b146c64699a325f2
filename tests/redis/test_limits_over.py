"""A team refused for its requests limit is refused again by the same process without asking Redis, and
never longer than Redis would refuse it (shared.RedisStore._still_over), on a real redis-server.

The local refusal of a team whose limits allow blocks lasts at most to the end of Redis's bucket (other
processes give their blocks back then), so the check allows one script call per bucket boundary the refused
requests spanned: a loaded CI run's 20 refusals crossed one (1868 calls for 1867). The module has its own
redis-server, so that INFO commandstats counts this module's calls only."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from app.limits.shared import RedisStore, open_client
from app.limits.window import BUCKETS, US, TeamQuota
from tests.support.processes import RedisServer

WINDOW_S = 3.0  # buckets of 50 ms: the refusal ends within seconds


def store(url: str, ns: str) -> RedisStore:
    return RedisStore(open_client(url, 2.0), namespace=ns, window_s=WINDOW_S, lease_s=60, timeout_s=2.0)


async def scripts(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_requests_refusal_is_kept_locally_until_redis_would_admit(own_redis: RedisServer) -> None:
    ns = "over" + uuid.uuid4().hex[:8]
    a, b = store(own_redis.url, ns), store(own_redis.url, ns)
    watch = aioredis.Redis.from_url(own_redis.url)
    quota = TeamQuota(rpm=2)
    try:
        assert await a.sync_clock() and await b.sync_clock()
        assert (await a.admit("t", quota, 0, "r1")).ok and (await a.admit("t", quota, 0, "r2")).ok
        first = await a.admit("t", quota, 0, "r3")
        assert not first.ok and first.reason == "requests" and 0 < first.retry_us <= (WINDOW_S + 0.05) * US
        before, t0 = await scripts(watch), time.monotonic()
        again = [await a.admit("t", quota, 0, f"x{i}") for i in range(20)]
        crossed = int((time.monotonic() - t0) / (WINDOW_S / BUCKETS)) + 1  # bucket boundaries they may span
        assert await scripts(watch) - before <= min(crossed, 19)  # refused here; Redis asked once per bucket
        assert all(not v.ok and v.reason == "requests" and 0 < v.retry_us <= first.retry_us for v in again)
        assert not (await b.admit("t", quota, 0, "b1")).ok  # Redis refuses the other process alike
        # A changed limit (a teams reload) asks Redis again.
        assert (await a.admit("t", TeamQuota(rpm=4), 0, "r4")).ok
        # Once the time Redis named has passed, the next request is Redis's decision again, and passes.
        await asyncio.sleep(first.retry_us / US + 0.05)
        calls = await scripts(watch)
        assert (await a.admit("t", quota, 0, "r5")).ok
        assert await scripts(watch) == calls + 1
    finally:
        await a.close()
        await b.close()
        await watch.aclose()


async def test_a_tokens_refusal_is_always_asked_again(own_redis: RedisServer) -> None:
    ns = "over" + uuid.uuid4().hex[:8]
    a = store(own_redis.url, ns)
    watch = aioredis.Redis.from_url(own_redis.url)
    quota = TeamQuota(rpm=100, tpm=100)
    try:
        assert await a.sync_clock()
        assert (await a.admit("t", quota, 90, "r1")).ok
        assert not (await a.admit("t", quota, 50, "r2")).ok  # tokens: a smaller request may still pass
        calls = await scripts(watch)
        assert (await a.admit("t", quota, 10, "r3")).ok
        assert await scripts(watch) == calls + 1
    finally:
        await a.close()
        await watch.aclose()
