"""Blocks of a team's limits (app/limits/allowance.py) on a real redis-server: the script's grant and give
back against window.py's reference, several stores racing for one team (never more than the limit in any
window, most requests decided without a call, the rest given back), and a process that dies holding a block
(its block counts as used until it leaves the window)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config.settings import LimitFailurePolicy
from app.limits import window
from app.limits.allowance import monotonic_us
from app.limits.census import Census
from app.limits.decider import LimitDecider
from app.limits.local import LocalStore
from app.limits.shared import RedisStore, open_client
from app.limits.store import Ticket
from app.limits.window import US, TeamQuota, TeamWindow
from app.redis.bypass import Bypass
from tests.support.processes import RedisServer


def store(url: str, ns: str, window_s: float, processes: int = 1, clock: object = None) -> RedisStore:
    return RedisStore(
        open_client(url, 2.0),
        namespace=ns,
        window_s=window_s,
        lease_s=60,
        timeout_s=2.0,
        processes=lambda: processes,
        clock=clock,  # type: ignore[arg-type]
    )


async def scripts(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def counted(client: aioredis.Redis, ns: str, team: str) -> int:
    """Requests Redis counts in the team's window."""
    n = await client.hget(f"{{{ns}:team:{team}}}:meta", "n")
    return int(n or 0)


calls = st.lists(
    st.tuples(
        st.integers(0, 400_000),  # us since the call before
        st.lists(st.tuples(st.integers(-3, 0), st.integers(0, 6), st.integers(0, 300)), max_size=3),  # give back
        st.lists(st.integers(0, 200), max_size=4),  # requests' estimates
        st.integers(0, 30),  # block wanted
        st.integers(0, 500),  # its tokens
        st.integers(1, 5),  # processes
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls, st.sampled_from([(20, 0), (0, 1000), (60, 3000), (8, 100)]))
def test_the_script_grants_and_takes_back_like_the_reference(
    redis_server: RedisServer,
    seq: list[tuple[int, list[tuple[int, int, int]], list[int], int, int, int]],
    q2: tuple[int, int],
) -> None:
    rpm, tpm = q2
    q = TeamQuota(rpm=rpm or None, tpm=tpm or None)
    win = 3 * US
    size = window.bucket_us(win)

    async def replay() -> None:
        now = 1_000_000 * win
        s = store(redis_server.url, "g" + uuid.uuid4().hex[:10], 3.0, clock=lambda: now)
        w = TeamWindow()
        try:
            for gap, backs, ests, want, want_t, procs in seq:
                now += gap
                cb = now // size
                merged: dict[int, tuple[int, int]] = {}
                for db, n, t in backs:
                    merged.setdefault(cb + db, (n, t))
                flat = [x for b, (n, t) in merged.items() for x in (b, n, t)]
                args = [win, 60 * US, rpm, tpm, 0, 0, want, want_t, procs, len(merged), *flat]
                for i, est in enumerate(ests):
                    args += (f"r{i}", est)
                r, _ = await s._run("team_admit", s.team_keys("t"), args)
                for b, (n, t) in merged.items():
                    window.give_back(w, now=now, window=win, bucket=b, requests=n, tokens=t)
                rows = []
                for i, est in enumerate(ests):
                    v = window.admit(w, q, now=now, window=win, lease=60 * US, est=est, rid=f"r{i}")
                    rows.append([int(v.ok), v.requests, v.tokens, v.reset_us, v.retry_us])
                block = window.grant(w, q, now=now, window=win, requests=want, tokens=want_t, processes=procs)
                count, tokens = window._totals(w)
                reset = window._reset(w, now)
                assert list(r[2:8]) == [*block, count, tokens, reset]
                assert [[row[0], row[4], row[5], row[6], row[3]] for row in r[8:]] == rows
        finally:
            await s.close()

    asyncio.run(replay())


async def test_racing_stores_never_pass_the_limit_in_any_window(redis_server: RedisServer) -> None:
    """Six processes of one team, each sending as fast as it can for several windows: no window (measured on
    this machine's clock, less twice the slowest answer) holds more than rpm, and most requests made no call."""
    ns, win_s, rpm = "race" + uuid.uuid4().hex[:8], 1.2, 400
    stores = [store(redis_server.url, ns, win_s, processes=6) for _ in range(6)]
    watch = aioredis.Redis.from_url(redis_server.url)
    quota = TeamQuota(rpm=rpm, tpm=10**9)
    admitted: list[float] = []
    slowest = 0.0
    sent = 0

    async def flood(s: RedisStore, end: float) -> None:
        nonlocal slowest, sent
        rng = random.Random()
        while time.monotonic() < end:
            before = time.monotonic()
            v = await s.admit("t", quota, rng.choice([0, 0, 0, 3]), uuid.uuid4().hex[:8])
            after = time.monotonic()
            sent += 1
            slowest = max(slowest, after - before)
            if v.ok:
                admitted.append(after)
            if rng.random() < 0.05:
                await asyncio.sleep(rng.random() * 0.01)

    try:
        for s in stores:
            assert await s.sync_clock()
        calls = await scripts(watch)
        end = time.monotonic() + 3 * win_s
        await asyncio.gather(*(flood(s, end) for s in stores))
        calls = await scripts(watch) - calls
    finally:
        for s in stores:
            await s.close()
        await watch.aclose()
    admitted.sort()
    span = win_s - 2 * slowest
    most = max(len([t for t in admitted[i:] if t < a + span]) for i, a in enumerate(admitted))
    assert most <= rpm
    assert len(admitted) >= 2 * rpm  # the limit was reached again and again
    assert calls < sent / 5  # most requests, admitted or refused, made no call


async def test_blocks_are_given_back(redis_server: RedisServer) -> None:
    """Within one window: once the stores close (or their blocks' bucket ends), Redis counts exactly the
    requests admitted, not the blocks."""
    ns = "back" + uuid.uuid4().hex[:8]
    stores = [store(redis_server.url, ns, 60.0, processes=3) for _ in range(3)]
    watch = aioredis.Redis.from_url(redis_server.url)
    quota = TeamQuota(rpm=10**6)
    admitted = 0
    try:
        for s in stores:
            assert await s.sync_clock()
        for _ in range(30):
            for s in stores:
                vs = await asyncio.gather(*(s.admit("t", quota, 0, uuid.uuid4().hex) for _ in range(40)))
                admitted += sum(v.ok for v in vs)
            await asyncio.sleep(0.02)
        assert sum(a.requests for s in stores for a in s.blocks.held.values()) > 0  # blocks are held
        assert await counted(watch, ns, "t") > admitted
        # Their bucket ended: the renewal gave the rest back and, the team being busy, took the next bucket's
        # block; that one ended unused: given back, and no more renewals for an idle team.
        await asyncio.sleep(2.3)
        assert await counted(watch, ns, "t") == admitted
        for s in stores:
            vs = await asyncio.gather(*(s.admit("t", quota, 0, uuid.uuid4().hex) for _ in range(40)))
            admitted += sum(v.ok for v in vs)
    finally:
        for s in stores:
            await s.close()
    try:
        assert await counted(watch, ns, "t") == admitted  # closing gave back the rest
    finally:
        await watch.aclose()


async def test_near_the_limit_requests_are_decided_alone_and_all_of_it_is_admitted(redis_server: RedisServer) -> None:
    """Four processes race for the last of a window: every request Redis could admit is admitted (the blocks
    held are given back, their owners' own requests first), never one more."""
    ns, rpm = "near" + uuid.uuid4().hex[:8], 300
    stores = [store(redis_server.url, ns, 60.0, processes=4) for _ in range(4)]
    quota = TeamQuota(rpm=rpm)
    admitted = 0
    try:
        for s in stores:
            assert await s.sync_clock()
        deadline = time.monotonic() + 8
        while admitted < rpm and time.monotonic() < deadline:
            for s in stores:
                vs = await asyncio.gather(*(s.admit("t", quota, 0, uuid.uuid4().hex) for _ in range(7)))
                admitted += sum(v.ok for v in vs)
            await asyncio.sleep(0.01)
        for s in stores:  # nothing more, whoever asks
            assert not any([(await s.admit("t", quota, 0, uuid.uuid4().hex)).ok for _ in range(5)])
    finally:
        for s in stores:
            await s.close()
    assert admitted == rpm


async def test_a_process_that_dies_holding_a_block_leaves_it_counted_until_it_leaves_the_window(
    redis_server: RedisServer,
) -> None:
    """The dead process never gives its block back: the others get the limit less what it held, and the
    whole limit again once its bucket left the window (a window and a bucket at most)."""
    ns, win_s, rpm = "dead" + uuid.uuid4().hex[:8], 2.0, 200
    dead, alive = store(redis_server.url, ns, win_s, processes=2), store(redis_server.url, ns, win_s, processes=2)
    quota = TeamQuota(rpm=rpm)
    try:
        assert await dead.sync_clock() and await alive.sync_clock()
        used = 0

        def holding() -> int:
            return sum(a.requests + sum(n for n, _ in a.back.values()) for a in dead.blocks.held.values())

        for _ in range(20):  # busy enough to hold a block: six rounds on a quiet machine, more at CI's load
            used += sum(v.ok for v in await asyncio.gather(*(dead.admit("t", quota, 0, str(i)) for i in range(8))))
            if holding() >= 2:
                break
        dead.blocks.closing = True  # killed: no renewal, no give back, ever
        for timer in dead.blocks.timers.values():
            timer.cancel()
        if dead.blocks.tasks:
            await asyncio.wait(dead.blocks.tasks)
        held = holding()
        assert held >= 2 and used + held < rpm, (used, held)
        start = time.monotonic()
        got = sum([(await alive.admit("t", quota, 0, f"a{i}")).ok for i in range(rpm + 20)])
        assert got == rpm - used - held  # the dead block still counts
        await asyncio.sleep(max(0.0, win_s + win_s / 60 + 0.1 - (time.monotonic() - start)))
        again = sum([(await alive.admit("t", quota, 0, f"b{i}")).ok for i in range(rpm + 5)])
        assert again == rpm
    finally:
        await alive.close()
        await dead.link.close()


async def test_the_headers_never_count_a_block_granted_after_the_decision(redis_server: RedisServer) -> None:
    """A request Redis decides reports the window's counts at its decision; a block granted after it (by the
    same call, or by a prefetch whose reply came first) is not in them, so it must not be taken off them
    either (the e2e run where the header said 26 tokens left of 25: 975 billed, a 1-token block granted with
    the refusal). Every verdict counts at least what was admitted before it, whoever decided it."""
    ns, tpm = "hdr" + uuid.uuid4().hex[:8], 600
    s = store(redis_server.url, ns, 60.0, processes=12)
    quota = TeamQuota(rpm=10**6, tpm=tpm)
    admitted, grants = 0, set()
    try:
        assert await s.sync_clock()
        for _ in range(120):
            before = admitted
            vs = await asyncio.gather(*(s.admit("t", quota, 7, uuid.uuid4().hex) for _ in range(4)))
            for v in vs:
                assert v.tokens >= before and v.requests >= before // 7, (v, before)
            admitted += 7 * sum(v.ok for v in vs)
            grants.update(s.blocks.held["t"].grants)
            await asyncio.sleep(0.005)
        assert admitted <= tpm
        assert len(grants) >= 2  # blocks were in play
    finally:
        await s.close()


async def test_a_bill_is_settled_in_the_block_without_a_call_and_redis_counts_it(redis_server: RedisServer) -> None:
    """A request admitted from this process's block and billed other than its estimate is finished in the block
    while its bucket lasts: no script call; once the block goes back, Redis counts the bills, not the estimates
    (what the finish script would have made of them)."""
    ns = "settle" + uuid.uuid4().hex[:8]
    s = store(redis_server.url, ns, 60.0)
    census = Census(None, namespace=ns, floor=1, interval_s=1.0)
    limits = LimitDecider(s, LocalStore(window_s=60, lease_s=60), census=census, policy=LimitFailurePolicy(),
                          breaker=Bypass("redis limits", 0.5, None))  # fmt: skip
    watch = aioredis.Redis.from_url(redis_server.url)
    quota = TeamQuota(rpm=10**6, tpm=10**9)
    counted_tokens, settled = 0, 0
    try:
        assert await s.sync_clock()
        for attempt in range(20):  # until a block is held with time left in its bucket (a loaded machine may stall)
            for d in await asyncio.gather(*(limits.admit("t", quota, 10, uuid.uuid4().hex) for _ in range(20))):
                counted_tokens += 10 if d.verdict.ok else 0
            held = s.blocks.held.get("t")
            if held is None or monotonic_us() > held.until - 300_000 or held.tokens < 400:
                await asyncio.sleep(0.1)
                continue
            first, second = [await limits.admit("t", quota, 100, f"mine{attempt}.{i}") for i in range(2)]
            assert first.block and second.block and first.verdict.ok and second.verdict.ok
            tickets = [Ticket("t", f"r{i}", 100, d.verdict.now_us, d.verdict.day, d.store, d.block)
                       for i, d in enumerate((first, second))]  # fmt: skip
            calls = await scripts(watch)
            under = await limits.finish(tickets[0], 30)  # 70 back to the block
            over = await limits.finish(tickets[1], 160)  # 60 more, from the block
            assert await scripts(watch) == calls  # neither made a call
            assert under is not None and over is not None and over[1] - under[1] == 60
            counted_tokens += 30 + 160
            settled += 1
            break
        assert settled == 1
        # The block's bucket ended: the renewal gave its rest back (with the bills' difference) and, the team
        # being busy, took the next bucket's block; that one ended unused: given back (no renewal for an idle team).
        await asyncio.sleep(2.3)
        state = await watch.hgetall(f"{{{ns}:team:t}}:meta")
        assert int(state[b"t"]) == counted_tokens  # the bills are counted, exactly
    finally:
        await limits.close()
        await watch.aclose()


async def test_a_clean_stop_gives_back_the_block_it_holds(redis_server: RedisServer) -> None:
    """A store closed while it holds a block of its bucket gives the rest back: Redis then counts the requests
    and tokens admitted, not the block (docs/limits.md: a clean stop gives every block back)."""
    ns = "stop" + uuid.uuid4().hex[:8]
    s = store(redis_server.url, ns, 60.0)
    watch = aioredis.Redis.from_url(redis_server.url)
    quota = TeamQuota(rpm=10**6, tpm=10**9)
    admitted = 0
    try:
        assert await s.sync_clock()
        for _ in range(30):  # until a block is held with time left in its bucket (a loaded machine may stall)
            vs = await asyncio.gather(*(s.admit("t", quota, 10, uuid.uuid4().hex) for _ in range(20)))
            admitted += sum(v.ok for v in vs)
            held = s.blocks.held.get("t")
            if held is not None and held.requests > 0 and monotonic_us() < held.until - 300_000:
                break
            await asyncio.sleep(0.05)
        held = s.blocks.held["t"]
        assert held.requests > 0 and monotonic_us() < held.until  # the block is held as the store closes
    finally:
        await s.close()
    try:
        state = await watch.hgetall(f"{{{ns}:team:t}}:meta")
        assert (int(state[b"n"]), int(state[b"t"])) == (admitted, 10 * admitted)
    finally:
        await watch.aclose()
