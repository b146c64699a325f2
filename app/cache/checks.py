"""Cached values checked before use: a vector of the model's length holding only finite float32 numbers.

Upstream answers are checked before they are cached (upstreams/answers.py), but what a cache hands back may
have been written by something else (another version, a tool, a damaged entry). A value of the wrong length,
or holding NaN or an infinity, is a miss: the item is fetched again, its entry overwritten by the write that
follows, and the refusal counted (`gateway_cache_invalid_total{reason}`). It is never served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import Metrics

CHUNK = 64  # values checked together: one numpy call for many small vectors, a bounded copy for big answers
REASONS = ("length", "non_finite")


def usable(values: Sequence[bytes | None], size: int, metrics: Metrics | None = None) -> list[bytes | None]:
    """`values` with each one that is not `size` bytes of finite little-endian float32 replaced by None."""
    out = list(values)
    for start in range(0, len(out), CHUNK):
        present = [v for v in out[start : start + CHUNK] if v is not None]
        if present and not (all(len(v) == size for v in present) and _finite(b"".join(present))):
            _refuse(out, start, size, metrics)
    return out


def _finite(raw: bytes) -> bool:
    return len(raw) % 4 == 0 and bool(np.isfinite(np.frombuffer(raw, dtype="<f4")).all())


def _refuse(out: list[bytes | None], start: int, size: int, metrics: Metrics | None) -> None:
    """The values of one chunk, one by one: the bad ones become None and are counted."""
    for i in range(start, min(start + CHUNK, len(out))):
        v = out[i]
        if v is None:
            continue
        reason = "length" if len(v) != size else "non_finite" if not _finite(v) else None
        if reason is not None:
            out[i] = None
            if metrics is not None:
                metrics.child(metrics.cache_invalid, reason).inc()
