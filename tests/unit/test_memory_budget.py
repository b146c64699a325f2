"""The process's memory budget: leases take bytes, wait for others to give them back, and are refused
with 503 + Retry-After when they do not come in time."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter

from app.errors import Unavailable
from app.runtime.budget import MemoryBudget


async def test_a_lease_waits_for_bytes_given_back() -> None:
    budget = MemoryBudget(100, wait_s=2.0)
    first = budget.lease()
    await first.take(80, "body")
    second = budget.lease()
    waiting = asyncio.create_task(second.take(50, "input.contents[0].image"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first.release()
    await asyncio.wait_for(waiting, 1.0)
    assert budget.free == 50
    second.release()
    assert budget.free == 100


async def test_a_lease_is_refused_after_the_wait_with_retry_after() -> None:
    registry = CollectorRegistry()
    counter = Counter("memory_budget", "test", ["outcome"], registry=registry)
    budget = MemoryBudget(100, wait_s=0.1, counter=counter)
    async with budget.lease() as held:
        await held.take(90, "body")
        with pytest.raises(Unavailable) as refused:
            async with budget.lease() as other:
                await other.take(20, "input[3].image")
        assert refused.value.status == 503 and refused.value.retry_after == 1.0
        assert refused.value.param == "input[3].image"
    assert budget.free == 100
    assert registry.get_sample_value("memory_budget_total", {"outcome": "refused"}) == 1


async def test_more_than_the_whole_budget_is_refused_at_once() -> None:
    budget = MemoryBudget(100, wait_s=10.0)
    lease = budget.lease()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(lease.take(101, "body"), 1.0)
    assert budget.free == 100


async def test_waiters_are_served_in_order() -> None:
    budget = MemoryBudget(100, wait_s=2.0)
    holder = budget.lease()
    await holder.take(100, "a")
    order: list[str] = []

    async def want(name: str, n: int) -> None:
        lease = budget.lease()
        await lease.take(n, name)
        order.append(name)
        await asyncio.sleep(0.01)
        lease.release()

    tasks = [asyncio.create_task(want("big", 90)), asyncio.create_task(want("small", 5))]
    await asyncio.sleep(0.02)
    holder.release()
    await asyncio.gather(*tasks)
    assert order == ["big", "small"]
