"""Waits: each request's wait for its keys' futures, until its deadline, under one timer for all of them.

A request with misses waits for the futures of its keys (its own calls', or those of the requests it
joined) until its deadline; the futures are shared, so a wait that ends never cancels them. Per wait this
costs a future and a callback per key future still pending; one timer checks the waits in flight, armed at
the earliest deadline among them. A process's deadlines come in about the order its requests arrive (now
plus the same `request_deadline_s`), so a new wait seldom moves the timer: `asyncio.wait(..., timeout=)`
started and stopped a timer per request (~4 us on uvloop, a libuv timer each) and built sets of the
futures. A wait whose caller is cancelled leaves the futures as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any


class Waits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.waiting: dict[asyncio.Future[None], float] = {}  # each wait in flight: its future -> its deadline
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0  # when the timer fires
        self.loop: asyncio.AbstractEventLoop | None = None  # the timer's

    async def all_done(self, futures: Iterable[asyncio.Future[Any]], deadline: float) -> None:
        """Returns once every one of `futures` is done, or at `deadline` (`clock()`) with some not done."""
        pending = [f for f in futures if not f.done()]
        if not pending or deadline <= self.clock():
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        left = len(pending)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if left == 0 and not waiter.done():
                waiter.set_result(None)

        for f in pending:
            f.add_done_callback(one_done)
        self.waiting[waiter] = deadline
        if self.timer is None or deadline < self.due or loop is not self.loop:
            self._arm(deadline, loop)
        try:
            await waiter
        finally:
            del self.waiting[waiter]
            if left:  # ended at the deadline, or cancelled: the futures still pending keep no callback of ours
                for f in pending:
                    f.remove_done_callback(one_done)

    def _arm(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.due, self.loop = at, loop
        self.timer = loop.call_later(max(0.0, at - self.clock()), self._check)

    def _check(self) -> None:
        """Each wait whose deadline has come ends; the timer then moves to the earliest deadline left."""
        self.timer = None
        now, due = self.clock(), None
        for waiter, deadline in self.waiting.items():
            if deadline <= now:
                if not waiter.done():
                    waiter.set_result(None)
            elif due is None or deadline < due:
                due = deadline
        if due is not None:
            self._arm(due, asyncio.get_running_loop())
