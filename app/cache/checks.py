"""Cached values checked before use: a vector of the model's length holding only finite float32 numbers.

Upstream answers are checked before they are cached (upstreams/answers.py), so what this process wrote (the
in-process LRU, the hot cache) needs no second look. What a shared store hands back may have been written by
something else (another version, a tool, a damaged entry), so values read from Redis (RedisCache reads, the
lease claim's reads) are checked for NaN and infinities (`finite`) as they arrive, before the hot cache
keeps them; the length, which depends on the request, is checked on every read (`usable`). A refused value
is a miss: the item is fetched again and its entry overwritten by the write that follows; the refusal is
counted (`gateway_cache_invalid_total{reason}`). It is never served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import Metrics

# What a vector's key holds while some replica fetches it (flights/leases.py): this prefix, then the holder's
# token. Its first four bytes are a NaN and its length is never a multiple of 4: no vector is ever taken for
# it; the cache reads it as a miss, not as an invalid value.
LEASE = b"\xff\xff\xff\xfflease:"

CHUNK = 64  # values checked together: one numpy call for many small vectors, a bounded copy for big reads


def usable(values: Sequence[bytes | None], size: int, metrics: Metrics | None = None) -> list[bytes | None]:
    """`values` with each one that is not `size` bytes long replaced by None (counted: reason "length")."""
    out: list[bytes | None] = []
    wrong = 0
    for v in values:
        if v is not None and len(v) != size:
            v, wrong = None, wrong + 1
        out.append(v)
    if wrong and metrics is not None:
        metrics.child(metrics.cache_invalid, "length").inc(wrong)
    return out


def finite(values: Sequence[bytes | None], metrics: Metrics | None = None) -> list[bytes | None]:
    """`values` with each one holding a NaN or an infinity (as little-endian float32) replaced by None
    (counted: reason "non_finite"). A value that is not whole float32 numbers is left to `usable`."""
    out = list(values)
    for start in range(0, len(out), CHUNK):
        present = [v for v in out[start : start + CHUNK] if v is not None and len(v) % 4 == 0]
        if present and not _finite(b"".join(present)):
            for i in range(start, min(start + CHUNK, len(out))):
                v = out[i]
                if v is not None and len(v) % 4 == 0 and not _finite(v):
                    out[i] = None
                    if metrics is not None:
                        metrics.child(metrics.cache_invalid, "non_finite").inc()
    return out


def _finite(raw: bytes) -> bool:
    return bool(np.isfinite(np.frombuffer(raw, dtype="<f4")).all())
