"""stall.Stalls: Redis calls awaited in their callers' tasks while the link keeps answering, each ended when
a slice passes without any reply or at its end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import cast

import pytest

from app.redis.link import RedisLink
from app.redis.stall import Stalls


class Link:
    last_reply = 0.0


async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "reply"


async def test_a_slow_reply_is_waited_for_while_other_replies_come_back() -> None:
    link = Link()

    async def others() -> None:  # the link's other calls keep answering
        while True:
            link.last_reply = time.monotonic()
            await asyncio.sleep(0.02)

    beat = asyncio.create_task(others())
    try:
        t0 = time.monotonic()
        assert await Stalls(cast(RedisLink, link), 0.1).waited(slow(0.35), time.monotonic() + 5) == "reply"
        assert time.monotonic() - t0 >= 0.35  # three slices and more: waited, not timed out
    finally:
        beat.cancel()


async def test_no_reply_for_a_slice_ends_the_call_and_cancels_it() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stalled() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            cancelled.set()

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await Stalls(cast(RedisLink, Link()), 0.1).waited(stalled(), time.monotonic() + 5)
    assert 0.09 <= time.monotonic() - t0 < 0.5
    assert started.is_set() and cancelled.is_set()


async def test_the_budget_ends_the_call_even_while_the_link_answers() -> None:
    link = Link()

    async def others() -> None:
        while True:
            link.last_reply = time.monotonic()
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(others())
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await Stalls(cast(RedisLink, link), 0.1).waited(slow(10), time.monotonic() + 0.25)
        assert 0.24 <= time.monotonic() - t0 < 0.6
    finally:
        beat.cancel()


async def test_a_caller_cancelled_from_outside_is_cancelled_not_timed_out() -> None:
    task = asyncio.create_task(Stalls(cast(RedisLink, Link()), 0.1).waited(slow(10), time.monotonic() + 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_calls_in_flight_together_each_end_on_their_own_terms() -> None:
    link = Link()
    stalls = Stalls(cast(RedisLink, link), 0.1)

    async def others() -> None:
        while True:
            link.last_reply = time.monotonic()
            await asyncio.sleep(0.02)

    async def timed(call: asyncio.Future[str] | Coroutine[object, object, str], end_s: float) -> tuple[str, float]:
        t0 = time.monotonic()
        try:
            return await stalls.waited(call, t0 + end_s), time.monotonic() - t0
        except TimeoutError:
            return "timeout", time.monotonic() - t0

    beat = asyncio.create_task(others())
    try:
        long = asyncio.create_task(timed(slow(0.3), 5))
        await asyncio.sleep(0.01)  # the watch's timer is armed for the first call's slice
        results = await asyncio.gather(long, timed(slow(10), 0.05), timed(slow(0.05), 5))
    finally:
        beat.cancel()
    (a, a_s), (b, b_s), (c, c_s) = results
    assert a == "reply" and a_s >= 0.3  # waited over several slices
    assert b == "timeout" and 0.04 <= b_s < 0.09  # its own end, before the first call's slice ended
    assert c == "reply" and c_s < 0.09
    assert not stalls.waiting and not stalls.fired
