"""Slots: the bound on one upstream's calls in flight, shared fairly between the requests that wait for it.

A plain semaphore serves its waiters first come, first served: one request of 2,048 new texts makes about
200 calls at once, and another team's request of one text would wait behind all of them (seconds), though
its own limits are nowhere near. Here the waiters queue per owner (the request a call is for) and a freed
slot goes to the owners in turn, first come first served within each: whoever arrives waits for at most
one call per owner already waiting. A lone request still has every slot.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairSlots:
    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: OrderedDict[int, deque[asyncio.Future[None]]] = OrderedDict()

    @asynccontextmanager
    async def held(self, owner: int) -> AsyncIterator[None]:
        await self.acquire(owner)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, owner: int) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(owner, deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the slot came as the waiter was cancelled: it goes to the next one
            else:
                queue = self.waiting.get(owner)
                if queue is not None and granted in queue:
                    queue.remove(granted)
                    if not queue:
                        del self.waiting[owner]
            raise

    def release(self) -> None:
        """The slot to the first waiter of the owner whose turn it is (that owner then goes last)."""
        while self.waiting:
            owner, queue = next(iter(self.waiting.items()))
            granted = queue.popleft()
            if queue:
                self.waiting.move_to_end(owner)
            else:
                del self.waiting[owner]
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1
