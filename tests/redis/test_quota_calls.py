"""The upstream quota's script calls: a reserve is awaited in its caller's task (an upstream call's own,
which no request's cancellation reaches), ended by a stalled Redis within the stall timeout, and, when its
caller is cancelled (shutdown), leaves nothing running; an adjust, made by a request's task, completes even
when that request is cancelled while it waits."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from app.config.settings import LimitFailurePolicy
from app.limits.census import Census
from app.limits.decider import LimitDecider
from app.limits.local import LocalStore
from app.limits.pacing import Pace
from app.limits.quota import BOOKED_AHEAD, UpstreamQuota
from app.limits.shared import RedisStore, open_client
from app.limits.store import StoreUnavailable
from app.metrics import Metrics
from app.redis.bypass import Bypass
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


def gate(url: str) -> UpstreamQuota:
    """The fleet's quota gate on a Redis store (stall timeout 0.3 s), the local policy while Redis fails."""
    shared = RedisStore(open_client(url, 0.3), namespace=uuid.uuid4().hex[:8], window_s=60, lease_s=60, timeout_s=0.3)
    census = Census(None, namespace="q", floor=1, interval_s=1.0)
    limits = LimitDecider(
        shared, LocalStore(window_s=60, lease_s=60), census=census, policy=LimitFailurePolicy(),
        breaker=Bypass("redis limits", 0.5, None),
    )  # fmt: skip
    return UpstreamQuota(limits, Metrics(CollectorRegistry()), window_s=60, slack_s=0, max_wait_s=2.0)


async def test_calls_cancelled_while_their_reserves_wait_on_a_paused_redis_give_their_turns_back(
    own_redis: RedisServer,
) -> None:
    """The upstream calls' tasks (a shutdown cancels them) each hold one of the account's BOOKED_AHEAD turns
    while their reserve waits, in their own task now, on a paused Redis: cancelled, they give the turns back
    and leave no task, and the calls after them book at once, none waits for a turn that was lost."""
    q = gate(own_redis.url)
    try:
        assert await q.try_admit("up:m", 6000, None, 1, wait=True, owner=1) is None
        before = len(asyncio.all_tasks())
        own_redis.pause()
        calls = [
            asyncio.create_task(q.try_admit("up:m", 6000, None, 1, wait=True, owner=i)) for i in range(BOOKED_AHEAD)
        ]
        await asyncio.sleep(0.05)  # each holds a turn, its reserve sent and waiting for Redis
        assert not any(c.done() for c in calls)
        for c in calls:
            c.cancel()
        assert all(isinstance(r, asyncio.CancelledError) for r in await asyncio.gather(*calls, return_exceptions=True))
        assert len(asyncio.all_tasks()) == before
        own_redis.resume()
        await asyncio.sleep(0.6)  # the breaker's retry delay, if a watch fired meanwhile
        t0 = time.monotonic()
        later = [q.try_admit("up:m", 6000, None, 1, wait=True, owner=10 + i) for i in range(2 * BOOKED_AHEAD)]
        assert await asyncio.gather(*later) == [None] * len(later)
        assert time.monotonic() - t0 < 1.5  # slots 10 ms apart; a lost turn would make them wait 2 s and refuse
    finally:
        own_redis.resume()
        await q.limits.close()
        await q.limits.shared.close()  # type: ignore[union-attr]


async def test_many_calls_against_a_paused_redis_all_end_under_the_failure_policy(own_redis: RedisServer) -> None:
    """Calls of several requests booking while Redis is paused: each ends (the stall watch ends the reserves in
    flight, then the breaker keeps the others off Redis), admitted by the local policy; none hangs."""
    q = gate(own_redis.url)
    try:
        assert await q.try_admit("up:m", 6000, None, 1, wait=True, owner=1) is None
        own_redis.pause()
        t0 = time.monotonic()
        calls = [q.try_admit("up:m", 6000, None, 1, wait=True, owner=i % 3) for i in range(12)]
        assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [None] * 12
        assert time.monotonic() - t0 < 2.0  # one stall timeout (0.3 s), then local slots 20 ms apart
    finally:
        own_redis.resume()
        await q.limits.close()
        await q.limits.shared.close()  # type: ignore[union-attr]
