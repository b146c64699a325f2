"""The process's memory budget: leases take bytes, wait for others to give them back, and are refused
with 503 + Retry-After when they do not come in time."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter

from app.errors import OverShare, Unavailable
from app.runtime.budget import SMALL_BODY_BYTES, VECTOR_BYTES, MemoryBudget, vector_bytes


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
    counter = Counter("memory_budget", "test", ["budget", "outcome"], registry=registry)
    budget = MemoryBudget(100, wait_s=0.1, counter=counter)
    async with budget.lease() as held:
        await held.take(90, "body")
        with pytest.raises(Unavailable) as refused:
            async with budget.lease() as other:
                await other.take(20, "input[3].image")
        assert refused.value.status == 503 and refused.value.retry_after == 1.0
        assert refused.value.param == "input[3].image"
    assert budget.free == 100
    assert registry.get_sample_value("memory_budget_total", {"budget": "requests", "outcome": "refused"}) == 1


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


async def test_a_waiter_served_and_cancelled_in_one_turn_passes_its_bytes_on() -> None:
    # A fetch waiting for memory whose request gives up (a sibling fetch failed: the TaskGroup cancels it)
    # in the same turn as the bytes come to it: nobody holds them then. They must come back to the budget,
    # or it shrinks for good (and never goes idle, so memory is never trimmed).
    budget = MemoryBudget(100, wait_s=2.0)
    first, second = budget.lease(), budget.lease()
    await first.take(100, "input[0]")
    waiting = asyncio.create_task(second.take(60, "input[1]"))
    await asyncio.sleep(0)
    first.release()  # serves the waiter: its 60 bytes are taken for it
    waiting.cancel()  # and its request gives up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert second.held == 0 and budget.free == 100


async def test_a_waiter_whose_time_ran_out_as_bytes_came_is_refused_cleanly() -> None:
    # The waiter's deadline and a give-back fall in one loop turn: the deadline cancels its future, the
    # give-back skips (and drops) it, then the waiter wakes to its timeout. A 503, not an error of our own.
    budget = MemoryBudget(100, wait_s=0.05)
    first, second = budget.lease(), budget.lease()
    await first.take(100, "input[0]")
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(second.take(60, "input[1]"))
    await asyncio.sleep(0)
    loop.call_at(loop.time() + 0.05, first.release)  # due with (just after) the waiter's deadline
    await asyncio.sleep(0.2)
    assert waiting.done()
    exc = waiting.exception()
    assert exc is None or isinstance(exc, Unavailable), repr(exc)
    assert budget.free == 100 - second.held


async def test_a_team_past_its_share_waits_for_its_own_bytes_while_other_teams_find_room() -> None:
    registry = CollectorRegistry()
    counter = Counter("memory_budget", "test", ["budget", "outcome"], registry=registry)
    budget = MemoryBudget(100, wait_s=0.2, share=0.25, counter=counter)
    greedy = [budget.lease("greedy") for _ in range(3)]
    await greedy[0].take(20, "a")
    # 20 + 10 passes the share (25): this one waits for the team's own bytes, then gets 429 naming the field
    with pytest.raises(OverShare) as refused:
        await greedy[1].take(10, "input[1]")
    assert refused.value.status == 429 and refused.value.retry_after == 1.0 and refused.value.param == "input[1]"
    assert registry.get_sample_value("memory_budget_total", {"budget": "requests", "outcome": "over_share"}) == 1
    # another team takes the room the greedy one may not
    other = budget.lease("other")
    await asyncio.wait_for(other.take(25, "body"), 0.05)
    # the greedy team's waiter goes on once its own bytes come back
    waiting = asyncio.create_task(greedy[2].take(10, "input[2]"))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    greedy[0].release()
    await asyncio.wait_for(waiting, 0.1)
    assert budget.held_by == {"greedy": 10, "other": 25}
    greedy[2].release()
    other.release()
    assert budget.free == 100 and budget.held_by == {}


async def test_a_team_holding_nothing_takes_more_than_its_share_and_siblings_count_while_they_wait() -> None:
    budget = MemoryBudget(100, wait_s=1.0, share=0.25)
    blocker = budget.lease()  # no team: bound by the budget alone
    await blocker.take(60, "x")
    big = budget.lease("team")
    await big.take(40, "body")  # alone, more than the share (25): one large body still passes
    budget_waiter = budget.lease("team")
    # past the share: waits for the team's own bytes, not the budget's
    task = asyncio.create_task(budget_waiter.take(5, "input"))
    await asyncio.sleep(0.02)
    assert not task.done()
    blocker.release()  # room in the budget does not help: the team still holds 40
    await asyncio.sleep(0.02)
    assert not task.done()
    big.release()
    await asyncio.wait_for(task, 0.1)
    assert budget.held_by == {"team": 5}
    budget_waiter.release()
    assert budget.free == 100 and budget.held_by == {}


async def test_a_team_waiting_for_the_budget_is_counted_and_uncounted_when_refused() -> None:
    budget = MemoryBudget(100, wait_s=0.1, share=0.5)
    blocker = budget.lease()
    await blocker.take(90, "x")
    lease = budget.lease("team")
    with pytest.raises(Unavailable):  # the budget's own 503: the team was within its share
        await lease.take(40, "body")
    assert budget.held_by == {} and lease.held == 0
    blocker.release()
    assert budget.free == 100


async def test_one_request_grows_past_its_team_s_share_while_the_team_s_others_hold_nothing() -> None:
    budget = MemoryBudget(100, wait_s=0.1, share=0.25)
    one = budget.lease("team")
    # two fetches of one request take at once: neither waits for the other, though both pass the share
    await asyncio.wait_for(asyncio.gather(one.take(20, "input[0]"), one.take(20, "input[1]")), 0.05)
    assert one.held == 40 and budget.held_by == {"team": 40}
    other = budget.lease("team")
    with pytest.raises(OverShare):  # another request of the team: bound by the share
        await other.take(1, "body")
    one.release()
    await asyncio.wait_for(other.take(30, "body"), 0.05)  # alone again: the budget alone bounds it
    other.release()
    assert budget.free == 100 and budget.held_by == {}


async def test_two_requests_of_a_team_each_holding_part_never_wait_for_each_other() -> None:
    budget = MemoryBudget(100, wait_s=1.0, share=0.25)
    older, younger = budget.lease("team"), budget.lease("team")
    await older.take(10, "a")
    await younger.take(10, "b")
    later = asyncio.create_task(younger.take(10, "b"))  # past the share, and not the team's oldest: waits
    await asyncio.sleep(0.02)
    assert not later.done()
    await asyncio.wait_for(older.take(10, "a"), 0.05)  # the team's oldest request: the budget alone bounds it
    assert budget.held_by == {"team": 30} and not later.done()
    older.release()
    await asyncio.wait_for(later, 0.1)
    younger.release()
    assert budget.free == 100 and budget.held_by == {}


async def test_a_requests_vectors_are_counted_as_float32_bytes() -> None:
    budget = MemoryBudget(16 << 20, wait_s=0.0)
    assert vector_bytes(15, 1024) == 15 * (4 * 1024 + VECTOR_BYTES) < SMALL_BODY_BYTES  # not counted: small
    lease = budget.lease("alpha")
    await lease.take(vector_bytes(2048, 1024), "input")
    assert lease.held == 2048 * (4 * 1024 + VECTOR_BYTES) == budget.max_bytes - budget.free
    with pytest.raises(Unavailable):  # 8.5 MB more than the 7.8 left: refused (no wait)
        await budget.lease().take(vector_bytes(2048, 1024), "input")
    lease.release()
    assert budget.free == budget.max_bytes
