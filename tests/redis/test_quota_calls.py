"""The upstream quota's script calls: a reserve is awaited in its caller's task (an upstream call's own,
which no request's cancellation reaches), ended by a stalled Redis within the stall timeout, and, when its
caller is cancelled (shutdown), leaves nothing running; an adjust, made by a request's task, completes even
when that request is cancelled while it waits."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.limits.pacing import Pace
from app.limits.shared import RedisStore, open_client
from app.limits.store import StoreUnavailable
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer

PACE = Pace.of(600, 60_000, 60, 0)


def store(url: str) -> RedisStore:
    return RedisStore(open_client(url, 0.3), namespace=uuid.uuid4().hex[:8], window_s=60, lease_s=60, timeout_s=0.3)


async def test_a_reserve_of_a_paused_redis_ends_within_the_stall_timeout(own_redis: RedisServer) -> None:
    s = store(own_redis.url)
    assert PACE is not None
    assert (await s.reserve("up:m", PACE, 10, 10**6)).ok
    own_redis.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.reserve("up:m", PACE, 10, 10**6)
        assert time.monotonic() - t0 < 1.5  # one slice of 0.3 s: generous margin for a shared machine
    finally:
        own_redis.resume()
        await s.close()


async def test_a_cancelled_reserve_leaves_no_task_behind(own_redis: RedisServer) -> None:
    s = store(own_redis.url)
    assert PACE is not None
    assert (await s.reserve("up:m", PACE, 10, 10**6)).ok
    before = len(asyncio.all_tasks())
    own_redis.pause()
    try:
        call = asyncio.create_task(s.reserve("up:m", PACE, 10, 10**6))
        await asyncio.sleep(0.05)  # sent: waiting for Redis's reply
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert len(asyncio.all_tasks()) == before  # nothing of the reserve still runs
    finally:
        own_redis.resume()
        await s.close()


async def test_an_adjust_completes_when_its_caller_is_cancelled(own_redis: RedisServer) -> None:
    s = store(own_redis.url)
    assert PACE is not None
    key = s.account_key("up:m")
    try:
        assert (await s.reserve("up:m", PACE, 10, 10**6)).ok
        paid = float(await s.client.hget(key, "paid"))
        caller = asyncio.create_task(s.adjust("up:m", PACE, 500))
        await asyncio.sleep(0)  # the adjust is on its way
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller

        async def adjusted() -> bool:
            return float(await s.client.hget(key, "paid")) == paid + 500 * PACE.token_us

        await eventually_async(adjusted, within=5, what="the cancelled caller's adjust in Redis")
    finally:
        await s.close()
