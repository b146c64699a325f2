"""FairSlots (app/upstreams/slots.py): one request's many calls cannot make another request wait behind all
of them; the bound holds; cancelled waiters give their turn away."""

from __future__ import annotations

import asyncio

import pytest

from app.upstreams.slots import FairSlots


async def test_a_late_small_request_waits_for_one_call_of_a_big_one_not_all() -> None:
    slots = FairSlots(2)
    order: list[int] = []
    release: list[asyncio.Future[None]] = []

    async def call(owner: int) -> None:
        async with slots.held(owner):
            order.append(owner)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            release.append(done)
            await done

    big = [asyncio.create_task(call(1)) for _ in range(40)]  # one request's 40 calls, 2 slots
    await asyncio.sleep(0)
    small = asyncio.create_task(call(2))  # another request arrives with one call
    await asyncio.sleep(0)
    assert order == [1, 1]
    # Owners take turns: the big request was waiting first, so one more of its calls goes, then the small
    # request's (a plain semaphore would send all 38 waiting big calls first).
    for done in range(2):
        release[done].set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)
    assert order == [1, 1, 1, 2]
    while not all(t.done() for t in [*big, small]):
        for f in release:
            if not f.done():
                f.set_result(None)
        await asyncio.sleep(0)
    assert sorted(order) == [1] * 40 + [2]


async def test_never_more_holders_than_slots() -> None:
    slots = FairSlots(3)
    holding = 0
    most = 0

    async def call(owner: int) -> None:
        nonlocal holding, most
        async with slots.held(owner):
            holding += 1
            most = max(most, holding)
            await asyncio.sleep(0.001 * (owner % 3))
            holding -= 1

    await asyncio.gather(*(call(i % 7) for i in range(200)))
    assert most == 3 and holding == 0 and slots.free == 3 and not slots.waiting


async def test_a_cancelled_waiter_leaves_no_trace_and_loses_no_slot() -> None:
    slots = FairSlots(1)
    await slots.acquire(1)
    waiter = asyncio.create_task(slots.acquire(2))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not slots.waiting
    slots.release()
    assert slots.free == 1
    # Granted and cancelled in the same turn: the slot passes on, it is not lost.
    await slots.acquire(1)
    late = asyncio.create_task(slots.acquire(2))
    nxt = asyncio.create_task(slots.acquire(3))
    await asyncio.sleep(0)
    slots.release()  # granted to 2 ...
    late.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    await asyncio.wait_for(nxt, 1)  # 3 has it
    slots.release()
    assert slots.free == 1 and not slots.waiting
