"""The upstream quota books its slots in turn between requests (app/limits/quota.py): the calls of one big
request do not book the quota ahead of everybody else, and the wait for a turn counts against the queue's
bound. The quota here is this process's own (the local limiter), on the real clock: a slot every 10 ms."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from app.config.settings import Settings
from app.errors import RateLimited
from app.limits.quota import BOOKED_AHEAD, UpstreamQuota
from app.metrics import Metrics
from app.wiring.stores import limits_on

WINDOW_S, RPM = 6.0, 600  # a slot every 10 ms (no slack)
ACCOUNT = "ds:text-embedding-v4"


def quota(max_wait_s: float = 5.0) -> UpstreamQuota:
    metrics = Metrics(CollectorRegistry())
    limits = limits_on(None, Settings(limits_window_s=WINDOW_S), metrics)
    return UpstreamQuota(limits, metrics, window_s=WINDOW_S, slack_s=0.0, max_wait_s=max_wait_s)


async def test_a_later_request_books_after_the_calls_already_booked_not_after_all() -> None:
    q = quota()
    done: list[tuple[int, int]] = []  # (owner, call) in the order their slots came
    # A slot every 50 ms: each call sleeps from its booking to its slot, so a pause of the process between the
    # two (a collection, a descheduled runner) makes it later; at 10 ms apart a 30 ms pause once put call 21
    # before 18 in a fresh-clone run (load 5)
    rpm = 120

    async def call(owner: int, i: int) -> None:
        await q.try_admit(ACCOUNT, rpm, None, 1, wait=True, owner=owner)
        done.append((owner, i))

    big = [asyncio.create_task(call(1, i)) for i in range(40)]
    await asyncio.sleep(0.125)  # a few of the big request's slots have come
    before = len(done)
    small = asyncio.create_task(call(2, 0))
    await asyncio.gather(small, *big)
    after = done.index((2, 0)) - before  # the big request's calls whose slots came after it asked, before its own
    # BOOKED_AHEAD (4) booked and waiting when it asked, then one more of the big request's before its turn
    # (and one for the loop turn between asking and the task's start). In arrival order: all the rest (~37).
    assert after <= 6, (before, done)
    assert [i for owner, i in done if owner == 1] == list(range(40))  # the big request's calls in their order


async def test_turns_keep_the_quota_pace_full() -> None:
    q = quota()
    t0 = time.monotonic()
    await asyncio.gather(*(q.try_admit(ACCOUNT, RPM, None, 1, wait=True, owner=i % 3) for i in range(60)))
    took = time.monotonic() - t0
    # 60 slots 10 ms apart: about 0.6 s; booking in turns must not leave the slots between them unused.
    assert 0.55 <= took < 1.5, took


async def test_the_wait_for_a_turn_counts_against_the_queue_bound() -> None:
    q = quota(max_wait_s=0.2)
    results = await asyncio.gather(
        *(q.try_admit(ACCOUNT, RPM, None, 1, wait=True, owner=1) for _ in range(60)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, RateLimited)]
    admitted = [r for r in results if r is None]
    # 0.2 s of slots 10 ms apart: about 20 calls get one; the rest are refused (429), none waits for ever.
    assert 10 <= len(admitted) <= 26 and len(refused) == 60 - len(admitted), (len(admitted), results[:3])
    assert all(r.retry_after is not None and r.retry_after > 0 for r in refused)


async def test_a_call_that_may_not_wait_never_books_ahead_of_the_turns() -> None:
    q = quota()
    rpm = 60  # a slot every 100 ms: a pause of the process (a loaded runner) does not let the booked slots pass
    waiting = [asyncio.create_task(q.try_admit(ACCOUNT, rpm, None, 1, wait=True, owner=1)) for _ in range(6)]
    await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    wait = await q.try_admit(ACCOUNT, rpm, None, 1, wait=False, owner=2)
    assert wait is not None and wait > 0  # the slots now are booked: it is told how long, nothing taken
    await asyncio.gather(*waiting)


@pytest.mark.parametrize("owners", [1, 5])
async def test_a_cancelled_call_gives_its_turn_back(owners: int) -> None:
    q = quota()
    calls = [asyncio.create_task(q.try_admit(ACCOUNT, RPM, None, 1, wait=True, owner=i % owners)) for i in range(12)]
    await asyncio.sleep(0.015)
    for c in calls[2:8]:
        c.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(r is None for r in results) == 6
    # Every turn came back: BOOKED_AHEAD more calls book at once.
    t0 = time.monotonic()
    await asyncio.gather(*(q.try_admit(ACCOUNT, RPM, None, 1, wait=True, owner=9) for _ in range(BOOKED_AHEAD)))
    assert time.monotonic() - t0 < 1.0
