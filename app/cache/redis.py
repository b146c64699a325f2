"""RedisCache: vectors in Redis (a single server, a Redis Cluster or a Sentinel master: see redislink.py), the
keys of every request reading in one event-loop turn read with one MGET (on a single server the link's
Turn merges them, redis/turn.py; on a cluster tickbatch.py does, then one MGET per slot, pipelined per
node), new vectors written with one pipelined SET EX. A Redis that fails or stalls
costs at most `timeout_s` once: the cache then stands aside (every read a miss, writes dropped) for
`retry_after_s` (see bypass.py), and requests keep being answered from the upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ..metrics import Metrics
from ..redis.bypass import Bypass
from ..redis.cause import cause
from ..redis.link import FAILURES, RedisLink
from .checks import LEASE, finite
from .store import SharedRedis
from .tickbatch import TickBatcher


class RedisCache:
    name = "redis"

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl_s: int,
        timeout_s: float,
        retry_after_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.breaker = Bypass("redis cache", retry_after_s, metrics)
        # Redis's CPU per read is mostly the command, not the keys: one MGET per loop turn for all readers. On a
        # single server (or Sentinel master) the link's Turn merges them (redis/turn.py `read`); on a cluster
        # this batcher does, and the link sends one MGET per slot, pipelined per node.
        self._read = self._read_now if link.turned else TickBatcher(self._read_now)
        # A reader or writer of a Turn waits within the Turn's deadline (the link's timeout): no timer of its own
        # when that deadline is within `timeout_s` (as wired); a timer otherwise. A failed turn's readers each
        # count a failed read, its writers a failed write.
        deadline = link.turn_deadline_s
        self._timeout_s = None if deadline is not None and deadline <= timeout_s else timeout_s
        if metrics:
            for op in ("read", "write"):
                metrics.redis_errors.labels(op)

    def _count(self, op: str) -> Callable[[], None] | None:
        metrics = self.metrics
        return None if metrics is None else metrics.redis_errors.labels(op).inc

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return finite(await self._read(keys), self.metrics)

    async def _read_now(self, keys: Sequence[str]) -> list[bytes | None]:
        read = lambda: self.link.mget(keys)  # noqa: E731
        values = await self.breaker.call(read, None, timeout_s=self._timeout_s, failed=self._count("read"))
        if values is None:
            return [None] * len(keys)
        return [v if isinstance(v, bytes) and not v.startswith(LEASE) else None for v in values]

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if entries:
            write = lambda: self.link.set_many(entries, self.ttl_s)  # noqa: E731
            await self.breaker.call(write, None, timeout_s=self._timeout_s, failed=self._count("write"))

    async def ping(self) -> bool:
        try:
            ok = await asyncio.wait_for(self.link.ping(), self.timeout_s)
        except FAILURES as exc:
            self.link.down_cause = cause(exc)
            return False
        self.link.down_cause = None
        return ok

    def shared_redis(self) -> SharedRedis:
        return SharedRedis(self.link, self.breaker, self.metrics)

    async def status(self) -> dict[str, object]:
        ok = await self.ping()
        shared = ok and await self.shared()
        out: dict[str, object] = {"backend": self.name, "ok": ok, "shared": shared, "redis": self.link.kind}
        if not shared:
            out["cause"] = self.breaker.last_cause or self.link.down_cause
        return out

    async def shared(self) -> bool:
        """Whether the cache is in use right now (not stood aside after a failure). Stood aside and due for
        a new try: one read of a key tells whether it is back (and closes the bypass if so)."""
        if self.breaker.is_open and self.breaker.allows:
            await self.link.recheck()
            await self.get_many(["readyz-probe"])
        return not self.breaker.is_open

    async def close(self) -> None:
        await self.link.close()
