"""VectorCache: what every vector store offers, float32 vector bytes by content key (keys.py).

The stores: `RedisCache` (redis.py, shared by every replica), `MemoryCache` (lru.py, the bounded
in-process LRU used when no REDIS_URL is set) and `HotCache` (hot.py, a per-worker LRU in front of Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..redis.bypass import Bypass
    from ..redis.link import RedisLink


@dataclass(frozen=True, slots=True)
class SharedRedis:
    """The Redis a shared store keeps its vectors in, for what must live beside them: the leases (a claim
    checks the vector and takes the lease in one script, so they share a slot) stand aside with the cache
    (one bypass) and count their errors with it."""

    link: RedisLink
    breaker: Bypass
    metrics: Metrics | None


class VectorCache(Protocol):
    name: str

    def shared_redis(self) -> SharedRedis | None:
        """The Redis the vectors live in; None for a store of this process alone."""
        ...

    async def status(self) -> dict[str, object]:
        """For /readyz: the backend, whether it answers, and for a shared store whether it is in use right
        now (not stood aside after a failure), its Redis's shape and else why not."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
