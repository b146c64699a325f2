"""Coalescing: identical in-flight misses go upstream once.

Within a process, the first request that misses a content key owns a future for it; any request that
misses the same key while it is in flight awaits that future instead of calling the upstream. Across
replicas, the owner also takes a short Redis lease on the key (see leases.py); a replica that finds the
lease taken polls the cache for the vector (with backoff, at most `wait_s`, never past the request's
deadline) and goes upstream itself only if the vector does not appear or the lease goes away without one.

The owner's misses go to the batcher (one upstream call per model batch, through the upstream caller);
the batcher lands each call in the in-flight table (inflight.py: cache write, lease release, entries
dropped). Nothing here calls back up: the service calls `fetch` and gets a FlightResult.

Items answered by another request's call (in this process or another) are `coalesced`: the request that
made the call pays for them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from ..cache.checks import finite, usable
from ..config.catalog import ModelSpec
from ..errors import UpstreamTimeout
from ..inputs.items import Item
from ..inputs.params import Params
from ..metrics import Metrics
from .batcher import Answer, Batcher, Pending, fail
from .inflight import InFlight
from .leases import Leases
from .waits import Waits

REMOTE = -1  # the share of an answer another replica paid for


@dataclass(slots=True)
class FlightResult:
    vectors: dict[str, bytes]
    billed: int = 0
    coalesced: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Claim:
    """A request's own misses, waiting for this loop turn's lease claim."""

    spec: ModelSpec
    params: Params
    owned: list[Pending]
    deadline: float


class Coalescer:
    def __init__(
        self,
        batcher: Batcher,
        inflight: InFlight,
        leases: Leases,
        *,
        wait_s: float,
        lease_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batcher = batcher
        self.inflight = inflight
        self.leases = leases
        self.wait_s = wait_s
        self.lease_s = lease_s
        self.metrics = metrics
        self.clock = clock
        self.tasks: set[asyncio.Task[None]] = set()
        self.claims: list[Claim] = []  # this loop turn's misses waiting for their leases
        self.requests = itertools.count(1)
        self.waits = Waits(clock)  # each request's wait for its keys, until its deadline: one timer for all

    async def fetch(
        self,
        spec: ModelSpec,
        params: Params,
        missing: list[tuple[str, Item]],
        *,
        deadline: float,
        write: bool,
        shared: bool,
    ) -> FlightResult:
        """Vectors for `missing` (content key, item); `shared`: may wait on other replicas' leases."""
        loop = asyncio.get_running_loop()
        owner = next(self.requests)
        futures: dict[str, asyncio.Future[Answer]] = {}
        joined: set[str] = set()
        owned: list[Pending] = []
        for key, item in missing:
            fut = self.inflight.futures.get(key)
            # An answered future stays here until its cache write is done; a caller that skips the cache
            # read (Cache-Control: no-cache) asked for a new computation, not for that answer.
            if fut is not None and (shared or not fut.done()):
                joined.add(key)
            else:
                fut = self.inflight.futures[key] = loop.create_future()
                owned.append(Pending(key, item, fut, deadline, write, owner))
            futures[key] = fut
        if owned:
            if shared and self.leases.shared:
                self._claim_later(Claim(spec, params, owned, deadline))
            else:
                self.batcher.submit(spec, params, owned)
        return await self._collect(futures, joined, {p.key for p in owned}, deadline, spec.name)

    async def _collect(
        self, futures: dict[str, asyncio.Future[Answer]], joined: set[str], owned: set[str], deadline: float, model: str
    ) -> FlightResult:
        await self.waits.all_done(futures.values(), deadline)
        out = FlightResult({}, coalesced=set(joined))
        error: BaseException | None = None
        for key, fut in futures.items():
            if not fut.done():
                error = error or UpstreamTimeout(f"the upstream of {model} did not answer within the request deadline")
                continue
            exc = fut.exception()
            if exc is not None:
                error = error or exc
                continue
            vector, share = fut.result()
            out.vectors[key] = vector
            if share < 0:  # answered by another replica's call
                out.coalesced.add(key)
            elif key in owned:
                out.billed += share
        if error is not None:
            raise error
        return out

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _claim_later(self, claim: Claim) -> None:
        """Queue a request's own misses for this loop turn's one lease claim (a task per turn, not per
        request: the claim goes on even when the request that queued it is cancelled)."""
        if not self.claims:
            asyncio.get_running_loop().call_soon(self._claim_turn)
        self.claims.append(claim)

    def _claim_turn(self) -> None:
        claims, self.claims = self.claims, []
        if claims:
            self._spawn(self._claim_then_submit(claims))

    async def _claim_then_submit(self, claims: list[Claim]) -> None:
        """One claim for the misses of every request of a loop turn (their keys are distinct: a key already
        in flight is joined, never owned twice); each request's share is then sent, or waited for."""
        try:
            mine, found = await self.leases.claim([p.key for c in claims for p in c.owned], self.lease_s)
        except Exception as exc:  # a bug or a cache failure here must not leave requests waiting
            for c in claims:
                self._fail(c.owned, exc)
            return
        for c in claims:
            try:
                others = self._submit_claimed(c, mine, found)
                if others:  # another replica holds them: polled for in a task of their own (rare)
                    self._spawn(self._wait_remote_or_fail(replace(c, owned=others)))
            except Exception as exc:
                self._fail(c.owned, exc)

    def _submit_claimed(self, c: Claim, mine: set[str], found: dict[str, bytes]) -> list[Pending]:
        """Send what this process now holds (or found refused in the cache); answer what another replica
        wrote meanwhile; return what another replica is fetching."""
        read = [found.get(p.key) for p in c.owned]  # read from Redis by the claim: checked whole
        vectors = finite(usable(read, 4 * c.params.dimension, self.metrics), self.metrics)
        go, others = [], []
        for p, vector in zip(c.owned, vectors, strict=True):
            if vector is not None:  # fetched by another replica meanwhile
                p.future.set_result((vector, REMOTE))
                self.inflight.forget(p)
            elif p.key in mine or p.key in found:  # ours, or a refused value there: fetched (and overwritten)
                go.append(p)
            else:
                others.append(p)
        if go:
            self.batcher.submit(c.spec, c.params, go)
        return others

    async def _wait_remote_or_fail(self, c: Claim) -> None:
        try:
            await self._wait_remote(c.spec, c.params, c.owned, c.deadline)
        except Exception as exc:
            self._fail(c.owned, exc)

    def _fail(self, owned: list[Pending], exc: Exception) -> None:
        for p in fail(owned, exc):
            self.inflight.forget(p)

    async def _wait_remote(self, spec: ModelSpec, params: Params, pendings: list[Pending], deadline: float) -> None:
        """Another replica holds the leases: poll until the vectors appear in the cache, a lease goes away
        without one, or the wait budget ends; what is still missing then, we fetch ourselves."""
        until = min(deadline, self.clock() + self.wait_s)
        waiting = {p.key: p for p in pendings}
        pause = 0.002
        while waiting and self.clock() + pause < until:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
            keys = list(waiting)
            # One read: the lease lives in the vector's key, which holds the vector once written.
            held, found = await self.leases.poll(keys)
            read = [found.get(k) for k in keys]
            values = finite(usable(read, 4 * params.dimension, self.metrics), self.metrics)
            orphans = []
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    p = waiting.pop(key)
                    if not p.future.done():
                        p.future.set_result((value, REMOTE))
                    self.inflight.forget(p)
                elif key not in held:
                    orphans.append(waiting.pop(key))
            if orphans:
                self.batcher.submit(spec, params, orphans)
        if waiting:
            self.batcher.submit(spec, params, list(waiting.values()))

    async def close(self) -> None:
        self._claim_turn()  # claims queued in this very turn
        await self.batcher.close()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
