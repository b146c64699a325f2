"""VectorCache: what every vector store offers, float32 vector bytes by content key (keys.py).

The stores: `RedisCache` (redis.py, shared by every replica), `MemoryCache` (memory.py, the bounded
in-process LRU used when no REDIS_URL is set) and `HotCache` (hot.py, a per-worker LRU in front of Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class VectorCache(Protocol):
    name: str

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
