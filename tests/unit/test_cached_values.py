"""Issue 19, item 6: cached values are checked before use: the model's length on every read (`usable`),
finite float32 numbers on every read from a shared store (`finite`); a refused value is counted.
(The whole path, a poisoned Redis entry fetched again and overwritten: tests/redis/test_cached_values_redis.py
and tests/e2e/test_cached_values_e2e.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.cache.checks import CHUNK, finite, usable
from app.metrics import Metrics

DIM = 8
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
    assert usable(values, SIZE, metrics) == [good, poison(bad), None, None, good]
    assert finite(values, metrics) == [good, None, None, b"\x00" * (SIZE - 4), good]
    assert finite([b"\x00" * 7], metrics) == [b"\x00" * 7]  # not whole float32 numbers: usable's to refuse
    assert (refused(metrics, "non_finite"), refused(metrics, "length")) == (1, 1)


def test_a_bad_value_deep_in_a_big_read_is_found() -> None:
    metrics = Metrics(CollectorRegistry())
    good = np.ones(DIM, dtype="<f4").tobytes()
    values: list[bytes | None] = [good] * (4 * CHUNK + 3)
    values[2 * CHUNK + 1] = poison(np.nan)
    out = finite(values, metrics)
    assert [i for i, v in enumerate(out) if v is None] == [2 * CHUNK + 1] and refused(metrics, "non_finite") == 1
