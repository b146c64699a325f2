"""VectorText: prepared JSON text of vectors, the same bytes orjson writes, bounded in size."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.api.vectortext import BASE64_RATIO, FLOAT_RATIO, VectorText, base64_json, float_json


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=64))
def test_fragment_is_what_orjson_writes(values: list[float]) -> None:
    vector = np.asarray(values, dtype="<f4")
    floats = VectorText(1 << 20, float_json, FLOAT_RATIO)
    b64 = VectorText(1 << 20, base64_json, BASE64_RATIO)
    direct = orjson.dumps({"embedding": vector}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert orjson.dumps({"embedding": floats.fragment(vector.tobytes())}) == direct
    assert orjson.dumps({"embedding": floats.fragment(vector.tobytes())}) == direct  # memoised: the same
    as_base64 = orjson.dumps({"embedding": base64.b64encode(vector.tobytes()).decode()})
    assert orjson.dumps({"embedding": b64.fragment(vector.tobytes())}) == as_base64


def test_memory_stays_within_its_bound() -> None:
    floats = VectorText(100_000, float_json, FLOAT_RATIO)
    for i in range(200):
        floats.fragment(np.random.default_rng(i).standard_normal(256).astype("<f4").tobytes())
    assert 0 < floats._bytes <= 100_000
    assert len(floats._data) == len(floats._sizes) < 200
