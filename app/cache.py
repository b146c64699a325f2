"""VectorCache: float32 vector bytes by content key.

`RedisCache` reads a request's keys with one MGET and writes new vectors with one pipelined SET EX. A
Redis that fails or stalls costs at most `redis_timeout_s` once: the cache then stands aside (every read a
miss, writes dropped) for `redis_retry_after_s`, logging once when it stops and once when it recovers, and
requests keep being answered from the upstream. `MemoryCache` is the bounded in-process LRU used when no
REDIS_URL is set.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .breaker import Breaker
from .metrics import Metrics


class VectorCache(Protocol):
    name: str

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCache:
    """Bounded LRU by total bytes; single process, so nothing to lock (one event loop)."""

    name = "memory"

    def __init__(self, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        data = self._data
        out: list[bytes | None] = []
        for k in keys:
            v = data.get(k)
            if v is not None:
                data.move_to_end(k)
            out.append(v)
        return out

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        for k, v in entries:
            old = self._data.pop(k, None)
            if old is not None:
                self._bytes -= len(old)
            if len(v) > self.max_bytes:
                continue
            self._data[k] = v
            self._bytes += len(v)
        while self._bytes > self.max_bytes and self._data:
            _, v = self._data.popitem(last=False)
            self._bytes -= len(v)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self._bytes = 0


class RedisCache:
    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl_s: int,
        timeout_s: float,
        retry_after_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.breaker = Breaker("redis cache", retry_after_s, metrics)
        if metrics:
            for op in ("read", "write"):
                metrics.redis_errors.labels(op)

    @classmethod
    def from_url(
        cls, url: str, *, ttl_s: int, timeout_s: float, retry_after_s: float, metrics: Metrics | None = None
    ) -> RedisCache:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=256,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client, ttl_s=ttl_s, timeout_s=timeout_s, retry_after_s=retry_after_s, metrics=metrics)

    def _failed(self, op: str, exc: BaseException) -> None:
        if self.metrics:
            self.metrics.redis_errors.labels(op).inc()
        self.breaker.failed(type(exc).__name__)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or not self.breaker.allows:
            return [None] * len(keys)
        try:
            values = await asyncio.wait_for(self.client.mget(keys), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("read", exc)
            return [None] * len(keys)
        self.breaker.succeeded()
        return [v if isinstance(v, bytes) else None for v in values]

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if not entries or not self.breaker.allows:
            return
        pipe = self.client.pipeline(transaction=False)
        for k, v in entries:
            pipe.set(k, v, ex=self.ttl_s)
        try:
            await asyncio.wait_for(pipe.execute(), self.timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("write", exc)
            return
        self.breaker.succeeded()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout_s))
        except (TimeoutError, RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
