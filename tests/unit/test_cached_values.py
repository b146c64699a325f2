"""Issue 19, item 6: a cached value of the right length holding NaN or an infinity is a miss: fetched again,
overwritten, counted, never served (the in-process store, and the hot cache in front of a shared store)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.cache.checks import usable
from app.cache.hot import HotCache
from app.cache.lru import MemoryCache
from app.metrics import Metrics
from tests.support.misspath import miss_path
from tests.unit.test_service import DIM, FakeUpstream, as_arrays, expected, request

SIZE = 4 * DIM


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("gateway_cache_invalid_total", {"reason": reason})
    assert value is not None
    return value


def poison(value: float) -> bytes:
    v = np.ones(DIM, dtype="<f4")
    v[DIM // 2] = value
    return v.tobytes()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_and_wrong_length_values_become_misses_and_are_counted(bad: float) -> None:
    metrics = Metrics(CollectorRegistry())
    good = np.arange(DIM, dtype="<f4").tobytes()
    values = [good, poison(bad), None, b"\x00" * (SIZE - 4), good]
    assert usable(values, SIZE, metrics) == [good, None, None, None, good]
    assert (refused(metrics, "non_finite"), refused(metrics, "length")) == (1, 1)


def test_a_bad_value_deep_in_a_big_read_is_found() -> None:
    metrics = Metrics(CollectorRegistry())
    good = np.ones(DIM, dtype="<f4").tobytes()
    values: list[bytes | None] = [good] * 300
    values[257] = poison(np.nan)
    out = usable(values, SIZE, metrics)
    assert [i for i, v in enumerate(out) if v is None] == [257] and refused(metrics, "non_finite") == 1


@pytest.mark.parametrize("hot", [False, True], ids=["memory", "hot-over-shared"])
async def test_a_poisoned_entry_is_fetched_again_overwritten_and_never_served(hot: bool) -> None:
    up = FakeUpstream()
    shared = MemoryCache(1 << 20)  # the in-process store, or the shared store behind the hot cache
    cache = HotCache(shared, 1 << 20) if hot else shared
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    svc = miss_path({"fake": up}, metrics, cache=cache)
    await svc.embed(None, request(["a"]))
    (key,) = shared._data
    await shared.set_many([(key, poison(np.nan))])
    if hot:
        await cache.hot.close()  # a worker that has not seen the key: the poisoned value is read from the shared store
    up.batches.clear()
    result = await svc.embed(None, request(["a"]))
    assert up.batches == [["a"]] and (result.hits, result.misses) == (0, 1)
    np.testing.assert_array_equal(as_arrays(result.vectors)[0], expected(["a"])[0])
    assert shared._data[key] == expected(["a"])[0].tobytes()  # overwritten
    if hot:
        assert cache.hot._data[key] == expected(["a"])[0].tobytes()
    assert refused(metrics, "non_finite") == 1
    up.batches.clear()
    again = await svc.embed(None, request(["a"]))  # the good value now: a hit, nothing counted
    assert up.batches == [] and again.hits == 1 and refused(metrics, "non_finite") == 1
