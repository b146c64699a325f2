"""The team's finishes: those of one event-loop turn go to Redis as one script call that settles each as if
alone, from a task of their own (a caller cancelled while it waits leaves its finish to complete), and a
paused Redis gives the caller a clean answer within the stall timeout."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config.settings import LimitFailurePolicy
from app.limits.shared import RedisStore, open_client
from app.limits.store import StoreUnavailable, Ticket
from app.limits.window import DAY_US, US, TeamQuota
from tests.redis.test_limits_redis import Clock, failover, script_calls, stores
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer

quotas = st.builds(
    TeamQuota,
    st.none() | st.integers(4, 12),
    st.none() | st.integers(1000, 6000),
    st.none() | st.integers(2, 8),
    st.none() | st.integers(2000, 20000),
)
turns = st.lists(
    st.tuples(
        st.integers(0, 8 * US),  # time before the turn
        st.lists(st.integers(0, 500), max_size=4),  # the admissions (one at a time)
        st.lists(st.tuples(st.integers(0, 40), st.integers(0, 900)), max_size=5),  # finishes of one turn: pick, bill
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns, quotas, st.integers(0, 60))
def test_a_turns_finishes_settle_in_order_like_the_reference(
    redis_server: RedisServer, seq: list[tuple[int, list[int], list[tuple[int, int]]]], quota: TeamQuota, before: int
) -> None:
    """Finishes made in one turn (several requests in the past and the current bucket, some in the same
    bucket, some across a UTC midnight) go as one script call; each caller gets what the reference answers
    when they are made one by one in that order."""

    async def replay() -> None:
        clock = Clock(20_000 * DAY_US - before * US)
        local, shared = stores(redis_server.url, clock)
        tickets: list[Ticket] = []
        try:
            await shared.admit("another team", quota, 0, "r")  # the scripts are loaded: EVALSHA from now on
            await shared.finish(Ticket("another team", "r", 0, clock.now, 0, "x"), 1)
            for i, (delay, estimates, finishes) in enumerate(seq):
                clock.now += delay
                for j, est in enumerate(estimates):
                    rid = f"r{i}.{j}"
                    mine = await local.admit("team", quota, est, rid)
                    assert mine == await shared.admit("team", quota, est, rid), (i, j)
                    if mine.ok:
                        tickets.append(Ticket("team", rid, est, mine.now_us, mine.day, "x"))
                chosen = [(tickets.pop(pick % len(tickets)), billed) for pick, billed in finishes if tickets]
                if not chosen:
                    continue
                expected = [await local.finish(t, billed) for t, billed in chosen]
                calls = await script_calls(shared)
                got = await asyncio.gather(*(shared.finish(t, billed) for t, billed in chosen))
                assert await script_calls(shared) - calls == 1  # the turn's finishes: one call
                assert list(got) == expected, i
        finally:
            await shared.close()

    asyncio.run(replay())


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
