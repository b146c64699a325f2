"""Memo: a bounded memo of values that are pure functions of their keys, read on the hot path as a plain dict.

The hot path reads `memo.recent` itself (`memo.recent.get(key)`: no method call on a hit, and read from the
memo each time: `put` replaces it) and calls `put(key, value, size)` for a value it had to make. `size` is
what the entry holds in bytes, its key and value and their share of the dicts; the caller knows it best.

Bounded by entries (`max_entries`) and by bytes (`max_bytes`), together: what a memo counts never passes
either, so its worst case is `max_bytes` whatever its entries look like (a bound by entries alone let the
shape of the entries decide: 4,096 texts of 512 astral characters were 18.3 MB), plus what its two dicts'
tables hold beyond the entries' share (a table does not shrink as its dict is freed: up to ~48 bytes times
`max_entries`). An entry of more than `max_entry_bytes` is not kept. When the next entry would pass a
bound, the memo starts again empty and the full one is freed a little per new entry, not at once (4,096
items freed at once held the loop 2-3.6 ms): each `put` frees at least two of its entries and at least
twice the new entry's bytes. So the full one is gone before the new one is half full, what both hold
together stays within the bounds, and each `put` frees in proportion to what it adds.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .tally import Tally

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class MemoGauges:
    """Where a memo reports what it holds, on each `put` that changes it (never on a hit): the tally of the
    hot path's metric updates and two gauge series (app/metrics.py: `Metrics.memo`)."""

    tally: Tally
    held_bytes: Any
    entries: Any


class Memo(Generic[K, V]):
    __slots__ = (
        "_gauges",
        "_retiring_sizes",
        "_sizes",
        "max_bytes",
        "max_entries",
        "max_entry_bytes",
        "recent",
        "recent_bytes",
        "retiring",
        "retiring_bytes",
    )

    def __init__(
        self, *, max_entries: int, max_bytes: int, max_entry_bytes: int, gauges: MemoGauges | None = None
    ) -> None:
        if not 0 < max_entry_bytes <= max_bytes // 2 or max_entries < 1:
            raise ValueError("a memo's entries are at most half its bytes (then a full one is gone when it fills)")
        self.recent: dict[K, V] = {}  # read directly on the hot path
        self.retiring: dict[K, V] = {}  # the full one, freed a little per new entry
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.recent_bytes = 0
        self.retiring_bytes = 0
        # Each entry's size, in the order of its dict: dict.popitem takes the last entry, list.pop the last size
        self._sizes = array("I")
        self._retiring_sizes = array("I")
        self._gauges = gauges

    @property
    def held_bytes(self) -> int:
        return self.recent_bytes + self.retiring_bytes

    @property
    def entries(self) -> int:
        return len(self.recent) + len(self.retiring)

    def put(self, key: K, value: V, size: int) -> None:
        """Keep `value` for `key` (one not in `recent`: the caller looked it up), unless it is over
        `max_entry_bytes`; then free what the bounds ask."""
        recent = self.recent
        if size > self.max_entry_bytes or key in recent:
            return
        if len(recent) >= self.max_entries or self.recent_bytes + size > self.max_bytes:
            recent = self._start_again()
        recent[key] = value
        self._sizes.append(size)
        self.recent_bytes += size
        retiring = self.retiring
        freed = count = 0
        if retiring:  # at least two entries and 2 x size bytes (fewer when it runs out)
            sizes = self._retiring_sizes
            while retiring and (count < 2 or freed < 2 * size):
                retiring.popitem()
                freed += sizes.pop()
                count += 1
            self.retiring_bytes -= freed
            if not retiring:
                self.retiring = {}  # its table (sized for the full one) goes too
        gauges = self._gauges
        if gauges is not None:
            gauges.tally.inc(gauges.held_bytes, size - freed)
            gauges.tally.inc(gauges.entries, 1 - count)

    def _start_again(self) -> dict[K, V]:
        """The new, empty `recent`. `retiring` is empty: freed (2 entries, 2 x the bytes per new one) before
        `recent` was half full."""
        self.retiring, self.recent = self.recent, {}
        self._retiring_sizes, self._sizes = self._sizes, array("I")
        self.retiring_bytes, self.recent_bytes = self.recent_bytes, 0
        return self.recent
