"""The team's finishes: made by a task of their own (a caller cancelled while it waits leaves its finish to
complete), and a paused Redis gives the caller a clean answer within the stall timeout."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.config.settings import LimitFailurePolicy
from app.limits.shared import RedisStore, open_client
from app.limits.store import StoreUnavailable, Ticket
from app.limits.window import TeamQuota
from tests.redis.test_limits_redis import failover
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer

LEASED = TeamQuota(rpm=100, tpm=10_000, concurrency=1)


def store_on(url: str, timeout_s: float) -> RedisStore:
    ns = "fin" + uuid.uuid4().hex[:8]
    return RedisStore(open_client(url, timeout_s), namespace=ns, window_s=60, lease_s=60, timeout_s=timeout_s)


async def admitted(store: RedisStore, rid: str) -> Ticket:
    v = await store.admit("t", LEASED, 10, rid)
    assert v.ok
    return Ticket("t", rid, 10, v.now_us, v.day, "redis")


@pytest.mark.parametrize("when", ["before its call is sent", "while Redis holds its call"])
async def test_a_caller_cancelled_mid_finish_still_frees_its_lease(own_redis: RedisServer, when: str) -> None:
    store = store_on(own_redis.url, 1.0)
    try:
        assert await store.sync_clock()
        ticket = await admitted(store, "a")
        assert not (await store.admit("t", LEASED, 10, "b")).ok  # the lease is held
        if when == "before its call is sent":
            caller = asyncio.create_task(store.finish(ticket, 4))
            await asyncio.sleep(0)  # the caller has queued its finish; the turn's call is not made yet
            caller.cancel()
        else:
            own_redis.pause()
            caller = asyncio.create_task(store.finish(ticket, 4))
            await asyncio.sleep(0.1)  # the call is on its way to the paused Redis
            caller.cancel()
            await asyncio.sleep(0.1)
            own_redis.resume()
        with pytest.raises(asyncio.CancelledError):
            await caller
        meta, lease_key = store.team_keys("t")

        async def released() -> bool:
            return await store.client.zscore(lease_key, "a") is None

        await eventually_async(released, within=3)
        assert (await store.admit("t", LEASED, 10, "c")).ok  # the slot is free again
        assert await store.client.hmget(meta, "n", "t") == [b"2", b"14"]  # "a" settled at 4 tokens, once
    finally:
        own_redis.resume()
        await store.close()


async def test_a_paused_redis_answers_the_finish_within_the_stall_timeout(own_redis: RedisServer) -> None:
    store = store_on(own_redis.url, 0.3)
    limits = failover(own_redis.url, LimitFailurePolicy())
    try:
        ticket = await admitted(store, "a")
        decided = await limits.admit("t", LEASED, 10, "d")
        assert decided.store == "redis" and decided.verdict.ok
        held = Ticket("t", "d", 10, decided.verdict.now_us, decided.verdict.day, "redis")
        own_redis.pause()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.finish(ticket, 4)
        assert time.monotonic() - t0 < 1.0  # a stall timeout (0.3 s), not the request's budget
        t0 = time.monotonic()
        assert await asyncio.wait_for(limits.finish(held, 4), 2) is None  # queued until Redis answers again
        assert time.monotonic() - t0 < 1.0
    finally:
        own_redis.resume()
        await store.close()
        await limits.close()
