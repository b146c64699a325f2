"""MemoryCache: the bounded in-process LRU of vectors, used when no REDIS_URL is set (and as the hot cache's
store)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ..metrics import Metrics

# What an entry holds besides its key's characters and its vector's bytes: the str and bytes objects'
# headers (49 + 33) and its slot in the ordered dict (~66, measured with tracemalloc). Counted, so the bound
# is the memory held: at 64 dimensions (256 bytes a vector, keys of 70 characters) an entry takes ~470 bytes,
# not 256.
ENTRY_OVERHEAD = 150


def entry_bytes(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


class MemoryCache:
    """Bounded LRU by total bytes (keys, vectors and their overhead); single process, so nothing to lock
    (one event loop)."""

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
                self._bytes -= entry_bytes(k, old)
            size = entry_bytes(k, v)
            if size > self.max_bytes:
                continue
            self._data[k] = v
            self._bytes += size
        while self._bytes > self.max_bytes and self._data:
            k, v = self._data.popitem(last=False)
            self._bytes -= entry_bytes(k, v)

    async def ping(self) -> bool:
        return True

    def shared_redis(self) -> None:
        return None

    async def status(self) -> dict[str, object]:
        return {"backend": self.name, "ok": True}

    async def close(self) -> None:
        self._data.clear()
        self._bytes = 0
