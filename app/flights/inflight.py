"""InFlight: the misses this process is fetching, by content key, and what happens when a call lands.

The coalescer registers one future per key it sends upstream; a request that misses the same key while
it is in flight awaits that future instead. The batcher lands every call here once its answers (or its
error) are in the futures: the new vectors are written to the cache in one pipelined write (which also ends
their leases), then the leases of keys not written are released, then the entries are dropped, in that
order, so that a request that comes later finds the vector in the cache or the entry still in flight, never
neither.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ..cache.store import VectorCache
from ..metrics import Metrics
from .batcher import Answer, Pending
from .leases import Leases


class InFlight:
    def __init__(self, cache: VectorCache, leases: Leases, metrics: Metrics) -> None:
        self.futures: dict[str, asyncio.Future[Answer]] = {}
        self.cache = cache
        self.leases = leases
        self.metrics = metrics

    def forget(self, p: Pending) -> None:
        if self.futures.get(p.key) is p.future:
            del self.futures[p.key]

    async def land(self, pendings: list[Pending], ok: bool) -> None:
        """After a call: write the new vectors, release the leases, drop the in-flight entries. An entry with
        nothing to write (a failure, a `no-store` request's) is dropped first: a request that comes after its
        answer must not share it (it would find nothing in the cache either way)."""
        try:
            entries: list[tuple[str, bytes]] = []
            if ok:
                entries = [(p.key, p.future.result()[0]) for p in pendings if p.write and _answered(p.future)]
            written = {k for k, _ in entries}
            for p in pendings:
                if p.key not in written:
                    self.forget(p)
            if entries:
                await self._write(entries)
            if self.leases.shared:
                # A written vector took its lease's place (the lease lives in its key: leases.py); the
                # leases of keys not written are released.
                rest = [p.key for p in pendings if p.key not in written]
                if rest:
                    await self.leases.release(rest)
        finally:
            for p in pendings:
                self.forget(p)

    async def _write(self, entries: Sequence[tuple[str, bytes]]) -> None:
        t0 = time.perf_counter()
        await self.cache.set_many(entries)
        m = self.metrics
        m.child(m.cache_duration, self.cache.name, "write").observe(time.perf_counter() - t0)


def _answered(fut: asyncio.Future[Answer]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None
