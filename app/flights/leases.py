"""Short Redis leases that tell the other replicas "this content key is being fetched: wait for it".

`claim(keys)` runs one script for all keys: a key whose vector is in the cache by now is answered with it
(another replica fetched it between our cache read and this claim: checking again in the same atomic step
closes that gap), otherwise `<key>:lease` is set with SET NX PX; it returns the keys this process now holds
and the vectors found. `held(keys)` says which leases still exist; `release(keys)` deletes the leases this
process holds (compare-and-delete, so a lease that expired and was taken by another replica is left);
`dropped_with(keys)`, for keys whose vectors are being written, names their leases, which the cache write
deletes with one plain DEL in its own round trip, after the values (cache/store.py `release`): whoever
holds such a lease (us, or another replica after ours expired), it only delays waiters, who find the
vector in the cache once it is gone (one DEL of 8 keys instead of a script of 8 GET and 8 DEL).
Redis failing or stalling never blocks a request: a lease that cannot be taken counts as taken by us
(we go upstream ourselves, as without coalescing), and the cache's breaker keeps us off a dead Redis. Every
failure counts in `gateway_redis_errors_total{op="lease"}`, as the cache's own reads and writes do.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from ..cache.tickbatch import TickBatcher
from ..metrics import Metrics
from ..redis.bypass import Bypass
from ..redis.link import RedisLink

T = TypeVar("T")

CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    out[i] = v
  elseif redis.call('SET', key .. ':lease', ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
RELEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  if redis.call('GET', key) == ARGV[1] then out[i] = redis.call('DEL', key) end
end
return out
"""


def lease_key(key: str) -> str:
    return key + ":lease"


class Leases(Protocol):
    shared: bool  # whether other processes see these leases

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]: ...

    async def held(self, keys: Sequence[str]) -> set[str]: ...

    async def release(self, keys: Sequence[str]) -> None: ...

    def dropped_with(self, keys: Sequence[str]) -> list[str]: ...


class LocalLeases:
    """No shared store: every key is ours (coalescing stays within the process)."""

    shared = False

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]:
        return set(keys), {}

    async def held(self, keys: Sequence[str]) -> set[str]:
        return set()

    async def release(self, keys: Sequence[str]) -> None:
        return None

    def dropped_with(self, keys: Sequence[str]) -> list[str]:
        return []


class RedisLeases:
    shared = True

    def __init__(self, link: RedisLink, breaker: Bypass, timeout_s: float, metrics: Metrics | None = None) -> None:
        self.link = link
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.metrics = metrics
        if metrics is not None:
            metrics.redis_errors.labels("lease")
        self.token = uuid.uuid4().hex
        self._claims: dict[int, TickBatcher[str, bytes | int]] = {}

    async def claim(self, keys: Sequence[str], ttl_s: float) -> tuple[set[str], dict[str, bytes]]:
        if not keys or not self.breaker.allows:
            return set(keys), {}
        px = max(1, int(ttl_s * 1000))
        batcher = self._claims.get(px)
        if batcher is None:  # one per lease length (in practice, one): the claims of a loop turn go together
            batcher = self._claims[px] = TickBatcher(lambda ks: self._claim_now(ks, px))
        answers = await batcher(keys)
        found = {k: a for k, a in zip(keys, answers, strict=True) if isinstance(a, bytes)}
        return {k for k, a in zip(keys, answers, strict=True) if a == 1}, found

    async def _claim_now(self, keys: list[str], px: int) -> list[bytes | int]:
        claim = lambda: self.link.eval_by_slot(CLAIM, keys, [self.token, px])  # noqa: E731
        answers = await self._guarded(claim, None)
        return [1] * len(keys) if answers is None else list(answers)

    async def held(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        values = await self._guarded(lambda: self.link.mget([lease_key(k) for k in keys]), None)
        if values is None:
            return set()
        return {k for k, v in zip(keys, values, strict=True) if v is not None}

    async def release(self, keys: Sequence[str]) -> None:
        if keys:
            leases = [lease_key(k) for k in keys]
            await self._guarded(lambda: self.link.eval_by_slot(RELEASE, leases, [self.token]), None)

    def dropped_with(self, keys: Sequence[str]) -> list[str]:
        return [lease_key(k) for k in keys]

    async def _guarded(self, command: Callable[[], Awaitable[T]], fallback: T) -> T:
        """A lease command through the cache's bypass (its successes do not close it: the cache's do)."""
        metrics = self.metrics
        count = None if metrics is None else metrics.redis_errors.labels("lease").inc
        return await self.breaker.call(command, fallback, timeout_s=self.timeout_s, failed=count, close=False)
