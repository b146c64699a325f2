"""Stalls: Redis calls awaited while Redis keeps answering, each in its caller's own task.

A slow reply (a busy Redis, this process's own busy event loop) is waited for; a stalled server is not:
a call ends (TimeoutError) at the end of a slice of `slice_s` in which no reply at all came back on the
link (`RedisLink.last_reply`), or at its `end`. One timer checks every call in flight, at the next end of
a slice among them: a call costs two dict operations, not a task of its own, `shield` and `wait_for`
(~7 us a call for the three), nor an `asyncio.timeout` and a timer of its own (~3 us). A caller that is
cancelled cancels its call: a call that must complete whatever its caller does is made from a task no
caller's cancellation reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from .link import RedisLink

T = TypeVar("T")


class Stalls:
    def __init__(self, link: RedisLink, slice_s: float) -> None:
        self.link = link
        self.slice_s = slice_s
        # The calls in flight: their task -> (the start of their slice, their end, the task's cancellations
        # before the call); the tasks this watch cancelled, and its timer while calls are in flight.
        self.waiting: dict[asyncio.Task[object], tuple[float, float, int]] = {}
        self.fired: set[asyncio.Task[object]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0  # when the timer fires

    async def waited(self, call: Awaitable[T], end: float) -> T:
        """`call`'s answer; TimeoutError when a slice passed without any reply on the link, or at `end`
        (`time.monotonic()`)."""
        task = asyncio.current_task()
        assert task is not None
        now = time.monotonic()
        self.waiting[task] = (now, end, task.cancelling())
        due = min(now + self.slice_s, end)
        if self.timer is None or due < self.due:  # else the timer fires before this call's slice ends
            self._arm(due)
        try:
            return await call
        except asyncio.CancelledError:
            if task in self.fired and task.uncancel() <= self.waiting[task][2]:
                raise TimeoutError from None  # this watch's cancellation, not the caller's
            raise
        finally:
            del self.waiting[task]
            self.fired.discard(task)

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.due = at
        self.timer = asyncio.get_running_loop().call_later(max(0.0, at - time.monotonic()), self._check)

    def _check(self) -> None:
        """Each call whose slice ended: a new slice if some reply came back during it and its end is not
        reached, else cancelled (its `waited` raises TimeoutError). Then the timer, at the next slice's end."""
        self.timer = None
        now, last = time.monotonic(), self.link.last_reply
        due = None
        for task, (since, end, before) in list(self.waiting.items()):
            if task in self.fired:
                continue
            if now >= min(since + self.slice_s, end):
                if last >= since and now < end:
                    since = now
                    self.waiting[task] = (since, end, before)
                else:
                    self.fired.add(task)
                    task.cancel()
                    continue
            at = min(since + self.slice_s, end)
            due = at if due is None else min(due, at)
        if due is not None:
            self._arm(due)
