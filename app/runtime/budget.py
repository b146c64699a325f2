"""One memory budget per process for the large things requests hold: bodies, fetched media, vectors, answers.

Per-request caps (max_body_bytes, media_fetch_max_total_bytes) bound one request, not many at once:
four requests naming 21 images of 3 MB each held over a gigabyte. Here a request takes a Lease, and the
lease takes bytes from the process's budget (a body past SMALL_BODY_BYTES; room for the largest image
allowed before each fetch, the unused part given back after it; weighted for the copies made of them);
when the budget is spent the request waits up to `wait_s` for others to finish, then gets 503 with
Retry-After. The lease gives everything back when the request ends.

One team's requests hold at most `share` of the budget together (a lease names its team: the holder): past
it, a request of that team waits for the team's other requests to give bytes back, then gets 429, while
other teams' requests still find room. Without it, one team's readers that take their answers just fast
enough to pass the write deadline's rule (hundreds of them at ~12 KB/s) could hold the whole budget, and
every team's large requests would get 503. A team's oldest request in progress, and a request while its
team's others hold nothing, are bound by the budget alone (one request of 21 fetched images of 3 MB needs
~250 MB: it still passes; two requests of a team never wait for each other). Leases without a holder (auth
off, the jobs of a team-less gateway) are bound by the budget alone.

Bytes given back are only freed memory if the allocator returns them: glibc keeps freed heap memory in
the process (and raises its mmap threshold after large frees, so the next burst lands on the heap too).
When the budget becomes idle after a burst, `malloc_trim` hands the free heap pages back to the system
(at most once per `trim_every_s`; nothing on a C library without it).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from ..errors import MemoryFull, OverShare

SMALL_BODY_BYTES = 64 * 1024  # bodies up to this size are not counted: the connection cap bounds them
# A fetched image is held as bytes, as its base64 data URI, decoded again to hash it, and in the upstream request.
FETCH_WEIGHT = 4
TRIM_AFTER_BYTES = 16 * 1024 * 1024  # a burst that held less than this is not worth a trim
VECTOR_BYTES = 33  # a vector's bytes object beyond its 4 bytes a value


def vector_bytes(count: int, dim: int) -> int:
    """What `count` vectors of `dim` values hold as float32 bytes. A request's vectors (read or fetched) are
    held until its answer is written (a slow reader of a streamed answer holds them for minutes): past
    SMALL_BODY_BYTES they are taken from its lease before they are read. Counted whole, also those the hot
    cache shares: a flood of distinct requests leaves each vector to its request alone."""
    return count * (4 * dim + VECTOR_BYTES)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


class MemoryBudget:
    """Waiting requests are served oldest lease first: a request that has started taking is finished
    before a younger one gets room, so a burst ends in some requests answered and the rest refused,
    rather than all of them sharing the room and all running out of time."""

    def __init__(
        self,
        max_bytes: int,
        *,
        wait_s: float,
        share: float = 1.0,
        trim_every_s: float = 1.0,
        counter: Any = None,
        name: str = "requests",
    ) -> None:
        """`counter`: a prometheus Counter labelled by budget (`name`) and outcome (waited, refused, over_share),
        or None."""
        self.max_bytes = max_bytes
        self.free = max_bytes
        self.share_bytes = int(max_bytes * share)  # the most one holder (team) holds at once
        self.held_by: dict[str, int] = {}  # bytes held or being waited for (claimed), by holder
        self._claims: dict[str, dict[int, int]] = {}  # by holder: each claiming lease's bytes, by its seq
        self._share_waiters: dict[str, list[asyncio.Future[None]]] = {}  # by holder: woken when it gives back
        self.wait_s = wait_s
        self.count: Callable[[str], None] = (lambda o: counter.labels(name, o).inc()) if counter else (lambda o: None)
        self.peak_held = 0  # most bytes held since the last trim
        self._leases = itertools.count()
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []  # heap: (lease, arrival, n, future)
        self._arrivals = itertools.count()
        self._trim = _malloc_trim()
        self._trim_every_s = trim_every_s
        self._trim_handle: asyncio.TimerHandle | None = None

    def lease(self, holder: str | None = None) -> Lease:
        """A new request's lease; `holder` (its team) is bound by the share."""
        return Lease(self, next(self._leases), holder)

    async def _take(self, n: int, lease: Lease, param: str) -> None:
        holder = lease.holder
        if holder is None:
            await self._take_room(n, lease.seq, param)
            return
        deadline = None
        if self._over_share(n, lease, holder):  # else no timer: a cache hit's answer takes room this way
            deadline = asyncio.get_running_loop().time() + self.wait_s
            try:
                async with asyncio.timeout_at(deadline):
                    await self._within_share(n, lease, holder)
            except TimeoutError:
                self.count("over_share")
                raise OverShare(
                    f"{param}: your team holds as much request data in this gateway process as one team may "
                    "(memory_budget_team_share); retry shortly",
                    param=param,
                    retry_after=1.0,
                ) from None
        self._claim(holder, lease.seq, n)  # counted now: the team's others wait on it
        try:
            await self._take_room(n, lease.seq, param, deadline)
        except BaseException:
            self._claim(holder, lease.seq, -n)
            raise

    def _over_share(self, n: int, lease: Lease, holder: str) -> bool:
        """Whether n more bytes would pass the holder's share (its bytes held and awaited). The team's oldest
        claiming lease, and a lease while the team's others claim nothing, are never over it (the budget alone
        bounds them): two requests of a team each holding part of what they need would otherwise wait for each
        other until both were refused."""
        held = self.held_by.get(holder, 0)
        if held + n <= self.share_bytes:
            return False
        claims = self._claims.get(holder, {})
        return held > claims.get(lease.seq, 0) and lease.seq != min(claims)

    async def _within_share(self, n: int, lease: Lease, holder: str) -> None:
        """Until n more bytes are within the holder's share (_over_share), woken as the holder gives back."""
        while self._over_share(n, lease, holder):
            future = asyncio.get_running_loop().create_future()
            self._share_waiters.setdefault(holder, []).append(future)
            try:
                await future
            finally:
                waiting = self._share_waiters.get(holder)
                if waiting is not None and future in waiting:
                    waiting.remove(future)

    def _claim(self, holder: str, seq: int, n: int) -> None:
        """Lease `seq` of `holder` claims n more bytes (given back: n < 0, which wakes the holder's waiters)."""
        claims = self._claims.setdefault(holder, {})
        mine = claims.get(seq, 0) + n
        if mine > 0:
            claims[seq] = mine
        else:
            claims.pop(seq, None)
        total = self.held_by.get(holder, 0) + n
        if total > 0:
            self.held_by[holder] = total
        else:
            self.held_by.pop(holder, None)
            self._claims.pop(holder, None)
        if n < 0:
            for future in self._share_waiters.pop(holder, ()):
                if not future.done():
                    future.set_result(None)  # each looks again at what its holder holds

    async def _take_room(self, n: int, seq: int, param: str, deadline: float | None = None) -> None:
        if n <= self.free and (not self._waiters or seq < self._waiters[0][0]):
            self.free -= n
        elif n > self.max_bytes:
            self._refuse(param)
        else:
            future = asyncio.get_running_loop().create_future()
            entry = (seq, next(self._arrivals), n, future)
            heapq.heappush(self._waiters, entry)
            try:
                async with asyncio.timeout(self.wait_s) if deadline is None else asyncio.timeout_at(deadline):
                    await future  # the bytes are taken for us by _give
            except TimeoutError:
                if not (future.done() and not future.cancelled()):  # else served as the time ran out
                    self._forget(entry)
                    self._refuse(param)
            except asyncio.CancelledError:  # its request gave up (a sibling fetch failed, the client left)
                if future.done() and not future.cancelled():
                    self._give(n)  # served in the same turn: the bytes would be held by nobody for ever
                else:
                    self._forget(entry)
                raise
            self.count("waited")
        self.peak_held = max(self.peak_held, self.max_bytes - self.free)

    def _forget(self, entry: tuple[int, int, int, asyncio.Future[None]]) -> None:
        """A waiter that gave up. _give may have popped it already (its future cancelled as the time ran out
        and skipped): then there is nothing to remove."""
        if entry in self._waiters:
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)

    def _refuse(self, param: str) -> None:
        self.count("refused")
        raise MemoryFull(
            f"{param}: the gateway is holding as much request data as it may; retry shortly",
            param=param,
            code="memory_budget",
            retry_after=1.0,
        )

    def _give(self, n: int) -> None:
        self.free += n
        while self._waiters and self._waiters[0][2] <= self.free:
            _, _, size, future = heapq.heappop(self._waiters)
            if not future.done():
                self.free -= size
                future.set_result(None)
        if self.free == self.max_bytes and self.peak_held >= TRIM_AFTER_BYTES:
            self._schedule_trim()

    def _schedule_trim(self) -> None:
        if self._trim_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._trim_handle = loop.call_later(0.0, self._trim_now, loop)

    def _trim_now(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.free == self.max_bytes:
            gc.collect()  # refused requests leave cycles (exception, traceback, frames) holding their data
            if self._trim is not None:
                self._trim(0)
            self.peak_held = 0
        self._trim_handle = None
        if self.peak_held >= TRIM_AFTER_BYTES:  # busy again: look again later
            self._trim_handle = loop.call_later(self._trim_every_s, self._trim_now, loop)


class Lease:
    """The bytes one request holds; `release` (or leaving `async with`) gives them all back."""

    __slots__ = ("budget", "held", "holder", "seq")

    def __init__(self, budget: MemoryBudget, seq: int, holder: str | None = None) -> None:
        self.budget = budget
        self.seq = seq  # the lease's age: older leases are served first
        self.holder = holder  # its team, bound by the budget's share (None: by the budget alone)
        self.held = 0

    async def take(self, n: int, param: str) -> None:
        """Hold n more bytes, waiting for them up to the budget's wait_s; MemoryFull (503) naming
        `param` when they do not come."""
        if n <= 0:
            return
        await self.budget._take(n, self, param)
        self.held += n

    def give_back(self, n: int) -> None:
        """Give back n of the bytes held (taken for more than was used)."""
        n = min(n, self.held)
        if n > 0:
            self.held -= n
            self._give(n)

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self._give(held)

    def _give(self, n: int) -> None:
        if self.holder is not None:
            self.budget._claim(self.holder, self.seq, -n)
        self.budget._give(n)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
