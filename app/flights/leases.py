"""Short Redis leases that tell the other replicas "this content key is being fetched: wait for it".

A lease lives in the vector's own key: a marker value (`LEASE` then this process's token, never the length
of a vector nor finite float32 numbers: cache readers take it for a miss, checks.py) set with NX and a
short expiry. So the vector's write, a plain SET EX, is also the lease's release: a miss costs Redis its
read, its claim and its write, with no command of its own for the lease (before: a script of a GET and a SET
per key to claim, and a DEL of the lease keys once written).
`claim(keys)` sends, per key and pipelined, `SET key marker NX PX ttl`: a key whose SET passed is ours
(the common case: one command per item); the others are read (one MGET): a vector written by another
replica since our cache read is answered with it, another marker is a fetch elsewhere. It returns the keys
this process now holds and the vectors found. `poll(keys)` reads the keys once (one MGET): the markers
still there and the vectors written. `release(keys)`, for keys whose vectors were not written (a failed
call), deletes the markers that are still ours (compare-and-delete in a script: a marker that expired and
was taken by another replica is left). Plain commands, no script on the way of a miss: they pipeline per
node on a cluster and run on any Redis.
Redis failing or stalling never blocks a request: a lease that cannot be taken counts as taken by us
(we go upstream ourselves, as without coalescing), and the cache's breaker keeps us off a dead Redis. Every
failure counts in `gateway_redis_errors_total{op="lease"}`, as the cache's own reads and writes do.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from ..cache.checks import LEASE
from ..metrics import Metrics
from ..redis.bypass import Bypass
from ..redis.link import RedisLink

T = TypeVar("T")

RELEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  if redis.call('GET', key) == ARGV[1] then out[i] = redis.call('DEL', key) end
end
return out
"""


class Leases(Protocol):
    shared: bool  # whether other processes see these leases

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]: ...

    async def poll(self, keys: Sequence[str]) -> tuple[set[str], dict[str, bytes]]: ...

    async def release(self, keys: Sequence[str]) -> None: ...


class LocalLeases:
    """No shared store: every key is ours (coalescing stays within the process)."""

    shared = False

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]:
        return set(keys), {}

    async def poll(self, keys: Sequence[str]) -> tuple[set[str], dict[str, bytes]]:
        return set(), {}

    async def release(self, keys: Sequence[str]) -> None:
        return None


class RedisLeases:
    shared = True

    def __init__(self, link: RedisLink, breaker: Bypass, timeout_s: float, metrics: Metrics | None = None) -> None:
        self.link = link
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.metrics = metrics
        if metrics is not None:
            metrics.redis_errors.labels("lease")
        self.marker = LEASE + uuid.uuid4().hex.encode()

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]:
        if not keys or not self.breaker.allows:
            return set(keys), {}
        # The coalescer claims a loop turn's misses together (one call per turn); on a single server the SETs
        # go in the Turn's round trip with the turn's other commands (redis/turn.py).
        answers = await self._claim_now(keys, max(1, int(ttl_s * 1000)))
        found = {k: a for k, a in zip(keys, answers, strict=True) if isinstance(a, bytes)}
        return {k for k, a in zip(keys, answers, strict=True) if a == 1}, found

    async def _claim_now(self, keys: Sequence[str], px: int) -> list[bytes | int]:
        """Per key 1 (ours now), the value found there (a vector), or 0 (another replica's lease)."""

        claims = [("SET", k, self.marker, "NX", "PX", px) for k in keys]
        took = await self._guarded(lambda: self.link.commands(claims), None)
        if took is None:
            return [1] * len(keys)
        out: list[bytes | int] = [1 if t else 0 for t in took]
        taken = [i for i, t in enumerate(took) if not t]  # rare: held elsewhere, or written since our read
        if taken:
            values = await self._guarded(lambda: self.link.mget([keys[i] for i in taken]), None)
            for i, value in zip(taken, values or [], strict=False):
                if isinstance(value, bytes) and not value.startswith(LEASE):
                    out[i] = value  # a vector another replica wrote meanwhile
        return out

    async def poll(self, keys: Sequence[str]) -> tuple[set[str], dict[str, bytes]]:
        if not keys:
            return set(), {}
        values = await self._guarded(lambda: self.link.mget(keys), None)
        if values is None:
            return set(), {}
        held: set[str] = set()
        found: dict[str, bytes] = {}
        for k, v in zip(keys, values, strict=True):
            if isinstance(v, bytes):
                if v.startswith(LEASE):
                    held.add(k)
                else:
                    found[k] = v
        return held, found

    async def release(self, keys: Sequence[str]) -> None:
        if keys:
            await self._guarded(lambda: self.link.eval_by_slot(RELEASE, keys, [self.marker]), None)

    async def _guarded(self, command: Callable[[], Awaitable[T]], fallback: T) -> T:
        """A lease command through the cache's bypass (its successes do not close it: the cache's do)."""
        metrics = self.metrics
        count = None if metrics is None else metrics.redis_errors.labels("lease").inc
        return await self.breaker.call(command, fallback, timeout_s=self.timeout_s, failed=count, close=False)
