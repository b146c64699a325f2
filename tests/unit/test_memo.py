"""Memo (app/runtime/memo.py): bounded by entries and by bytes together, an entry over its cap not kept, a
full memo freed a little per new entry (two entries and twice the new entry's bytes), what it holds reported
to its gauges on insert."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from app.runtime.memo import Memo


def sizes(memo: Memo[int, str]) -> tuple[int, int]:
    return len(memo.recent), len(memo.retiring)


def test_the_entries_kept_are_bounded() -> None:
    memo: Memo[int, str] = Memo(max_entries=4, max_bytes=1 << 20, max_entry_bytes=1 << 10)
    for key in range(20):
        memo.put(key, str(key), 10)
        assert memo.recent[key] == str(key)
        assert memo.entries <= 4 and memo.held_bytes == 10 * memo.entries


def test_the_bytes_kept_are_bounded() -> None:
    memo: Memo[int, str] = Memo(max_entries=1000, max_bytes=1000, max_entry_bytes=500)
    held = []
    for key in range(50):
        memo.put(key, str(key), 100 + 50 * (key % 5))  # 100 to 300 bytes
        assert key in memo.recent
        held.append(memo.held_bytes)
    assert max(held) <= 1000 and memo.entries < 10
    assert held[:4] == [100, 250, 450, 700]  # 4 entries; the 5th (300) would pass 1,000: the memo starts again


def test_an_entry_over_its_cap_is_not_kept() -> None:
    memo: Memo[int, str] = Memo(max_entries=10, max_bytes=1000, max_entry_bytes=100)
    memo.put(1, "a", 100)
    memo.put(2, "b", 101)
    assert memo.recent == {1: "a"} and (memo.entries, memo.held_bytes) == (1, 100)


def test_a_key_already_kept_is_kept_once() -> None:
    memo: Memo[int, str] = Memo(max_entries=10, max_bytes=1000, max_entry_bytes=100)
    memo.put(1, "a", 10)
    memo.put(1, "a", 10)
    assert (memo.entries, memo.held_bytes) == (1, 10)


def test_a_full_memo_is_freed_two_entries_per_new_entry() -> None:
    """Not all at once (4,096 items freed in one go held the loop 2-3.6 ms)."""
    memo: Memo[int, str] = Memo(max_entries=8, max_bytes=1 << 20, max_entry_bytes=1 << 10)
    for key in range(8):
        memo.put(key, "v", 10)
    assert sizes(memo) == (8, 0)
    seen = []
    for key in range(8, 13):
        memo.put(key, "v", 10)
        seen.append(sizes(memo))
    assert seen == [(1, 6), (2, 4), (3, 2), (4, 0), (5, 0)]
    assert list(memo.recent) == [8, 9, 10, 11, 12]


def test_a_full_memo_is_freed_twice_the_new_entrys_bytes_per_new_entry() -> None:
    memo: Memo[int, str] = Memo(max_entries=100, max_bytes=200, max_entry_bytes=100)
    for key in range(20):
        memo.put(key, "v", 10)
    assert sizes(memo) == (20, 0) and memo.held_bytes == 200
    memo.put(20, "big", 35)  # 70 bytes freed at least: 7 entries of 10
    assert sizes(memo) == (1, 13) and memo.held_bytes == 35 + 130
    memo.put(21, "small", 1)  # two entries at least
    assert sizes(memo) == (2, 11) and memo.held_bytes == 36 + 110
    memo.put(22, "big", 100)  # more than is left: all of it
    assert sizes(memo) == (3, 0) and memo.held_bytes == 136


def test_a_memo_whose_entry_may_be_over_half_its_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        Memo(max_entries=10, max_bytes=100, max_entry_bytes=51)


# Two entries per new entry alone would hold 240 bytes here: the small last two freed for one of 50
@example([(0, 50), (1, 50), (2, 50), (3, 40), (4, 5), (5, 5), (6, 50)])
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), max_size=300))
def test_within_both_bounds_after_every_put_and_each_put_frees_in_proportion(puts: list[tuple[int, int]]) -> None:
    memo: Memo[int, int] = Memo(max_entries=8, max_bytes=200, max_entry_bytes=50)
    held: dict[int, int] = {}  # what the memo holds by our count: entry -> size
    for entry, (key, size) in enumerate(puts):  # the value tells the entries apart (a key may be in both dicts)
        kept = size <= 50 and key not in memo.recent
        full = len(memo.recent) >= 8 or memo.recent_bytes + size > 200
        if kept and full:
            assert not memo.retiring  # the full one is gone before the new one fills
        retiring = memo.recent if kept and full else memo.retiring
        order = list(reversed(retiring.values()))  # the order they are freed in (dict.popitem: the last first)
        memo.put(key, entry, size)
        if kept:
            held[entry] = size
        now = {*memo.recent.values(), *memo.retiring.values()}
        gone = [e for e in order if e not in now]
        assert gone == order[: len(gone)]
        freed = [held.pop(e) for e in gone]
        assert memo.entries == len(held) <= 8 and memo.held_bytes == sum(held.values()) <= 200
        assert set(held) == now and len(now) == memo.entries
        assert len(freed) <= 2 or sum(freed[:-1]) < 2 * size  # none freed past the need
        if memo.retiring and kept:  # at least two and twice its bytes, while there are any
            assert len(freed) >= 2 and sum(freed) >= 2 * size


def test_what_a_memo_holds_is_on_its_gauges() -> None:
    metrics = Metrics(CollectorRegistry())
    memo: Memo[int, str] = Memo(max_entries=4, max_bytes=1000, max_entry_bytes=100, gauges=metrics.memo("texts"))
    for key in range(11):
        memo.put(key, "v", 10 + key)
        metrics.exposition()  # applies the tally
        sample = metrics.registry.get_sample_value
        assert sample("gateway_memo_bytes", {"memo": "texts"}) == memo.held_bytes
        assert sample("gateway_memo_entries", {"memo": "texts"}) == memo.entries
