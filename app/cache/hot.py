"""HotCache: a small in-process LRU of recent vectors in front of the shared Redis cache.

Correct without any invalidation because a content key names one vector forever: the key hashes
everything that decides the vector (keys.py), so an entry can only be missing, never stale. (To drop
cached vectors on purpose, bump KEY_VERSION or change the namespace; flushing Redis alone leaves each
worker's hot entries until they age out of the LRU.) A hit answered here costs no Redis round trip:
on a cache-hit request that round trip is a large part of the gateway's own time.
"""

from __future__ import annotations

from collections.abc import Sequence

from .lru import MemoryCache
from .store import SharedRedis, VectorCache


class HotCache:
    def __init__(self, inner: VectorCache, max_bytes: int) -> None:
        self.inner = inner
        self.hot = MemoryCache(max_bytes)
        self.name = inner.name

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = await self.hot.get_many(keys)
        missing = [i for i, v in enumerate(values) if v is None]
        if not missing:
            return values
        found = await self.inner.get_many([keys[i] for i in missing])  # one MGET per loop turn (redis.py)
        fill = []
        for i, v in zip(missing, found, strict=True):
            if v is not None:
                values[i] = v
                fill.append((keys[i], v))
        if fill:
            await self.hot.set_many(fill)
        return values

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        await self.hot.set_many(entries)
        await self.inner.set_many(entries)

    async def ping(self) -> bool:
        return await self.inner.ping()

    def shared_redis(self) -> SharedRedis | None:
        return self.inner.shared_redis()

    async def status(self) -> dict[str, object]:
        return await self.inner.status()

    async def close(self) -> None:
        await self.hot.close()
        await self.inner.close()
