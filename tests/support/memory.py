"""What a bounded memo (app/runtime/memo.py) holds, by its own count and by tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from app.runtime.memo import Memo


def traced_and_counted(memo: Memo[Any, Any], add: Callable[[int], object], n: int, every: int) -> list[tuple[int, int]]:
    """`add(i)` for i in range(n), which fills `memo`; every `every` calls, the bytes tracemalloc has seen
    allocated since the start and still held, and the memo's own count (`held_bytes`)."""
    held: list[tuple[int, int]] = []
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            add(i)
            if i % every == 0:
                held.append((tracemalloc.get_traced_memory()[0] - base, memo.held_bytes))
    finally:
        tracemalloc.stop()
    return held


def assert_counted(held: list[tuple[int, int]], cap: int, uncounted: int) -> None:
    """The count never passes `cap`; what is traced is within the count but for `uncounted` bytes (the dicts'
    tables, docs/operations.md), and once the memo has filled, not far under it (three quarters)."""
    assert max(count for _, count in held) <= cap
    assert all(traced <= count + uncounted for traced, count in held), [t - c for t, c in held if t > c + uncounted]
    assert all(traced >= 0.75 * count for traced, count in held[len(held) // 4 :])
