"""What a bounded memo (app/runtime/memo.py) holds, by its own count and by tracemalloc; how much a process's
peak resident memory grows (tests that try to defeat a bound by flooding a gateway)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path
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


def status_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class PeakGrowth:
    """How much a process's peak resident memory grows from now: the kernel's peak (VmHWM) is reset to the
    current RSS (writing 5 to /proc/PID/clear_refs), then read again by `mb`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.before = status_kib(pid, "VmHWM")

    def mb(self) -> float:
        return (status_kib(self.pid, "VmHWM") - self.before) / 1024
