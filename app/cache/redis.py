"""RedisCache: vectors in Redis, a request's keys read with one MGET, new vectors written with one pipelined
SET EX. A Redis that fails or stalls costs at most `timeout_s` once: the cache then stands aside (every
read a miss, writes dropped) for `retry_after_s` (see bypass.py), and requests keep being answered from
the upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..bypass import Bypass
from ..metrics import Metrics


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
        self.breaker = Bypass("redis cache", retry_after_s, metrics)
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
