"""Short Redis leases that tell the other replicas "this content key is being fetched: wait for it".

`claim(keys)` sets `<key>:lease` with SET NX PX for every key in one pipeline and returns the keys this
process now holds; `held(keys)` says which leases still exist; `release(keys)` deletes the leases this
process holds (compare-and-delete, so a lease that expired and was taken by another replica is left).
Redis failing or stalling never blocks a request: a lease that cannot be taken counts as taken by us
(we go upstream ourselves, as without coalescing), and the cache's breaker keeps us off a dead Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .cache import Breaker
from .tickbatch import TickBatcher

RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""


def lease_key(key: str) -> str:
    return key + ":lease"


class Leases(Protocol):
    shared: bool  # whether other processes see these leases

    async def claim(self, keys: Sequence[str], ttl_s: float) -> set[str]: ...

    async def held(self, keys: Sequence[str]) -> set[str]: ...

    async def release(self, keys: Sequence[str]) -> None: ...


class LocalLeases:
    """No shared store: every key is ours (coalescing stays within the process)."""

    shared = False

    async def claim(self, keys: Sequence[str], ttl_s: float) -> set[str]:
        return set(keys)

    async def held(self, keys: Sequence[str]) -> set[str]:
        return set()

    async def release(self, keys: Sequence[str]) -> None:
        return None


class RedisLeases:
    shared = True

    def __init__(self, client: aioredis.Redis, breaker: Breaker, timeout_s: float) -> None:
        self.client = client
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.token = uuid.uuid4().hex
        self._release = client.register_script(RELEASE)
        self._claims: dict[int, TickBatcher[str, bool]] = {}

    async def claim(self, keys: Sequence[str], ttl_s: float) -> set[str]:
        if not keys or not self.breaker.allows:
            return set(keys)
        px = max(1, int(ttl_s * 1000))
        batcher = self._claims.get(px)
        if batcher is None:  # one per lease length (in practice, one): the claims of a loop turn go together
            batcher = self._claims[px] = TickBatcher(lambda ks: self._claim_now(ks, px))
        answers = await batcher(keys)
        return {k for k, ok in zip(keys, answers, strict=True) if ok}

    async def _claim_now(self, keys: list[str], px: int) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.set(lease_key(k), self.token, nx=True, px=px)
        try:
            answers = await asyncio.wait_for(pipe.execute(), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self.breaker.failed(type(exc).__name__)
            return [True] * len(keys)
        return [bool(a) for a in answers]

    async def held(self, keys: Sequence[str]) -> set[str]:
        if not keys or not self.breaker.allows:
            return set()
        try:
            values = await asyncio.wait_for(self.client.mget([lease_key(k) for k in keys]), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self.breaker.failed(type(exc).__name__)
            return set()
        return {k for k, v in zip(keys, values, strict=True) if v is not None}

    async def release(self, keys: Sequence[str]) -> None:
        if not keys or not self.breaker.allows:
            return
        try:
            await asyncio.wait_for(self._release(keys=[lease_key(k) for k in keys], args=[self.token]), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self.breaker.failed(type(exc).__name__)
