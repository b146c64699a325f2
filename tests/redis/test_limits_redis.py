"""The Redis scripts against the reference arithmetic, and the failure policy, on a real redis-server.

Every decision is replayed on the in-process store and on Redis with the same injected clock: both must
decide alike, microsecond for microsecond. Then Redis is paused (SIGSTOP) under the failover layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from app.config.settings import LimitFailurePolicy
from app.limits.census import Census
from app.limits.decider import LimitDecider
from app.limits.local import LocalStore
from app.limits.pacing import Pace
from app.limits.shared import RedisStore, open_client
from app.limits.store import StoreUnavailable, Ticket
from app.limits.window import DAY_US, US, TeamQuota
from app.redis.bypass import Bypass
from app.redis.link import RedisLink
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer

WINDOW_S = 60.0
LEASE_S = 300.0


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def stores(url: str, clock: Clock, timeout_s: float = 2.0) -> tuple[LocalStore, RedisStore]:
    ns = "t" + uuid.uuid4().hex[:12]
    local = LocalStore(window_s=WINDOW_S, lease_s=LEASE_S, clock=clock)
    shared = RedisStore(
        open_client(url, timeout_s), namespace=ns, window_s=WINDOW_S, lease_s=LEASE_S, timeout_s=timeout_s, clock=clock
    )
    return local, shared


ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 15 * US), st.integers(0, 500)),
        st.tuples(st.just("finish"), st.integers(0, 40), st.integers(0, 700)),
    ),
    min_size=1,
    max_size=60,
)
quotas = st.builds(
    TeamQuota,
    st.none() | st.integers(1, 8),
    st.none() | st.integers(300, 2000),
    st.none() | st.integers(1, 4),
    st.none() | st.integers(500, 5000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops, quotas, st.integers(0, 120))
def test_team_script_decides_like_the_reference(
    redis_server: RedisServer, seq: list[tuple[str, int, int]], quota: TeamQuota, before_midnight_s: int
) -> None:
    async def replay() -> None:
        clock = Clock(20_000 * DAY_US - before_midnight_s * US)  # some sequences cross a UTC midnight
        local, shared = stores(redis_server.url, clock)
        tickets: list[Ticket] = []
        try:
            for i, (op, a, b) in enumerate(seq):
                if op == "admit":
                    clock.now += a
                    rid = f"r{i}"
                    mine, theirs = await local.admit("team", quota, b, rid), await shared.admit("team", quota, b, rid)
                    assert mine == theirs, (i, op)
                    if mine.ok:
                        tickets.append(Ticket("team", rid, b, mine.now_us, mine.day, "x"))
                elif tickets:
                    ticket = tickets.pop(a % len(tickets))
                    assert await local.finish(ticket, b) == await shared.finish(ticket, b), (i, op)
        finally:
            await shared.close()

    asyncio.run(replay())


turns = st.lists(
    st.tuples(st.integers(0, 15 * US), st.lists(st.integers(0, 500), min_size=1, max_size=6), st.integers(0, 700)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns, quotas)
def test_a_turns_admissions_decide_in_order_like_the_reference(
    redis_server: RedisServer, seq: list[tuple[int, list[int], int]], quota: TeamQuota
) -> None:
    """The admissions of one event-loop turn go to Redis as one script call (one per team), each decided as
    if alone after the ones before it: as many admits in a row at one time on the reference."""

    async def replay() -> None:
        clock = Clock(20_000 * DAY_US - 30 * US)
        local, shared = stores(redis_server.url, clock)
        tickets: list[Ticket] = []
        try:
            await shared.admit("another team", quota, 0, "r")  # the script is loaded: EVALSHA from now on
            for i, (delay, estimates, billed) in enumerate(seq):
                clock.now += delay
                rids = [f"r{i}.{j}" for j in range(len(estimates))]
                mine = [await local.admit("team", quota, est, rid) for est, rid in zip(estimates, rids, strict=True)]
                calls = await script_calls(shared)
                theirs = await asyncio.gather(
                    *(shared.admit("team", quota, e, r) for e, r in zip(estimates, rids, strict=True))
                )
                assert await script_calls(shared) - calls == 1  # the whole turn: one call
                assert mine == list(theirs), i
                for v, e, r in zip(mine, estimates, rids, strict=True):
                    if v.ok:
                        tickets.append(Ticket("team", r, e, v.now_us, v.day, "x"))
                if tickets:  # some finish between turns
                    ticket = tickets.pop(billed % len(tickets))
                    assert await local.finish(ticket, billed) == await shared.finish(ticket, billed), i
        finally:
            await shared.close()

    asyncio.run(replay())


async def script_calls(store: RedisStore) -> int:
    stats = await store.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 3 * US), st.integers(1, 3000), st.integers(-500, 500)), min_size=1, max_size=40),
    st.none() | st.integers(1, 120),
    st.none() | st.integers(5000, 100_000),
    st.integers(0, 20 * US),
)
def test_quota_script_decides_like_the_reference(
    redis_server: RedisServer, seq: list[tuple[int, int, int]], rpm: int | None, tpm: int | None, max_wait: int
) -> None:
    pace = Pace.of(rpm, tpm, WINDOW_S, 0.5)
    if pace is None:
        return

    async def replay() -> None:
        clock = Clock(1_800_000_000 * US)
        local, shared = stores(redis_server.url, clock)
        try:
            for delay, tokens, delta in seq:
                clock.now += delay
                mine = await local.reserve("up:model", pace, tokens, max_wait)
                assert mine == await shared.reserve("up:model", pace, tokens, max_wait)
                if mine.ok and delta:
                    await local.adjust("up:model", pace, delta)
                    await shared.adjust("up:model", pace, delta)
        finally:
            await shared.close()

    asyncio.run(replay())


async def test_decisions_use_the_redis_clock_and_one_cluster_slot(redis_server: RedisServer) -> None:
    store = RedisStore(
        open_client(redis_server.url, 1.0), namespace="clk" + uuid.uuid4().hex[:8], window_s=60, lease_s=60, timeout_s=1
    )
    try:
        seconds, micros = await store.client.time()
        v = await store.admit("team-a", TeamQuota(rpm=5, concurrency=2), 10, "r1")
        assert v.ok and abs(v.now_us - (seconds * US + micros)) < 5 * US
        # Every key of one team (and of one upstream account) hashes to one Redis Cluster slot.
        assert len({key_slot(k.encode()) for k in store.team_keys("team-a")}) == 1
        assert "{" in store.account_key("dashscope:text-embedding-v4")
        state = await store.client.hgetall(store.team_keys("team-a")[0])
        assert [v for k, v in state.items() if k.startswith(b"b")] == [b"1:10"]  # one bucket: 1 request, 10 tokens
        assert (state[b"n"], state[b"t"]) == (b"1", b"10")  # the running totals
        assert await store.client.zcard(store.team_keys("team-a")[1]) == 1
        # Limit state expires on its own once idle (no key outlives its window, lease or day).
        assert 0 < await store.client.pttl(store.team_keys("team-a")[0]) <= 62_000
    finally:
        await store.close()


# ------------------------------------------------------------------ Redis paused: the failover layer


def failover(url: str, policy: LimitFailurePolicy, shares: int = 2) -> LimitDecider:
    shared = RedisStore(
        open_client(url, 0.2), namespace="fo" + uuid.uuid4().hex[:8], window_s=60, lease_s=60, timeout_s=0.2
    )
    local = LocalStore(window_s=60, lease_s=60)
    census = Census(None, namespace="fo", floor=shares, interval_s=1.0)
    return LimitDecider(shared, local, census=census, policy=policy, breaker=Bypass("redis limits", 0.5, None))


async def test_paused_redis_local_policy_divides_and_never_hangs(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = failover(own_redis.url, LimitFailurePolicy())
    quota = TeamQuota(rpm=10, concurrency=20)

    async def warm() -> bool:  # a first script (a connection, the script's load) can pass 0.2 s on a loaded runner
        return (await limits.admit("warm", quota, 1, uuid.uuid4().hex)).store == "redis"

    await eventually_async(warm, within=10)
    caplog.clear()
    try:
        first = await limits.admit("t", quota, 5, "before")
        assert first.store == "redis" and first.verdict.ok
        held = Ticket("t", "before", 5, first.verdict.now_us, first.verdict.day, "redis")
        own_redis.pause()
        caplog.set_level(logging.WARNING, logger="embedding_gateway.breaker")
        t0 = time.monotonic()
        decisions = [await limits.admit("t", quota, 5, f"p{i}") for i in range(12)]
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0  # one timeout (0.2 s), then the breaker keeps requests off Redis
        assert [d.store for d in decisions if d.verdict.ok] == ["local"] * 5  # 10 / 2 processes
        assert all(d.quota.rpm == 5 for d in decisions)
        assert await limits.finish(held, 0) is None  # queued until Redis is back
        # The upstream quota goes local too, paced twice as wide (2 processes share it).
        pace = Pace.of(60, None, 60, 0)
        assert pace is not None
        assert (await limits.reserve("up:m", pace, 1, 0)).ok
        refused = await limits.reserve("up:m", pace, 1, 0)
        assert not refused.ok and refused.wait_us > 1.5 * US  # 2 s less the time between the two (1 s undivided)
        assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # once, not per request
    finally:
        own_redis.resume()
    await asyncio.sleep(0.6)  # the breaker's retry delay
    again = await limits.admit("t", quota, 5, "after")
    assert again.store == "redis" and again.verdict.ok
    assert again.verdict.requests == 2  # the paused attempts reached Redis late and charged nothing
    lease_key = limits.shared.team_keys("t")[1]  # type: ignore[union-attr]

    async def flushed() -> bool:  # the queued finish reaches Redis once it answers again
        return await limits.shared.client.zscore(lease_key, "before") is None  # type: ignore[union-attr]

    await eventually_async(flushed, within=5)
    assert sum("available again" in r.getMessage() for r in caplog.records) == 1
    await limits.close()


async def test_paused_redis_closed_and_open_policies(own_redis: RedisServer) -> None:
    closed = failover(own_redis.url, LimitFailurePolicy(requests="closed", upstream="closed"))
    opened = failover(own_redis.url, LimitFailurePolicy(requests="open", tokens="local", upstream="open"))
    pace = Pace.of(60, None, 60, 0)
    assert pace is not None
    own_redis.pause()
    try:
        refused = await closed.admit("t", TeamQuota(rpm=10), 1, "a")
        assert not refused.verdict.ok and refused.verdict.reason == "unavailable" and refused.verdict.retry_us > 0
        grant = await closed.reserve("up:m", pace, 1, 0)
        assert not grant.ok and grant.unavailable
        # open: requests unlimited while Redis fails; tokens still enforced locally (divided by 2)
        results = [await opened.admit("t", TeamQuota(rpm=1, tpm=100), 10, f"o{i}") for i in range(8)]
        assert all(r.verdict.ok for r in results[:5]) and not results[5].verdict.ok
        assert results[5].verdict.reason == "tokens" and results[0].quota == TeamQuota(tpm=50)
        assert all([(await opened.reserve("up:m", pace, 1, 0)).ok for _ in range(5)])
    finally:
        own_redis.resume()
        await closed.close()
        await opened.close()


async def test_a_stalled_store_raises_within_its_timeout(own_redis: RedisServer) -> None:
    store = RedisStore(open_client(own_redis.url, 0.2), namespace="st", window_s=60, lease_s=60, timeout_s=0.2)
    own_redis.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.admit("t", TeamQuota(rpm=1), 1, "x")
        assert time.monotonic() - t0 < 1.0
    finally:
        own_redis.resume()
        await store.close()
    unreachable = RedisStore(
        RedisLink(aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), cluster=False, where="x"),
        namespace="st",
        window_s=60,
        lease_s=60,
        timeout_s=0.2,
    )
    with pytest.raises(StoreUnavailable):
        await unreachable.admit("t", TeamQuota(rpm=1), 1, "x")
    await unreachable.close()
