"""The OpenAI body's checks without pydantic (schemas/openai.plain_request): whatever they accept,
EmbeddingRequest accepts with the same values; everything else is left to EmbeddingRequest (and its errors)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.schemas.openai import EmbeddingRequest, plain_request

FIELDS = ("model", "input", "dimensions", "encoding_format", "user")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3000)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", " ", "float", "base64", "Float", "text-embedding-v4", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["text", "a"]), inner, max_size=2),
    max_leaves=5,
)
bodies = st.dictionaries(st.sampled_from([*FIELDS, "text_type", "dimension", "extra"]), json_values, max_size=6)


def same_as_pydantic(data: dict[str, Any]) -> None:
    plain = plain_request(data)
    if plain is None:
        return
    model = EmbeddingRequest.model_validate(data)  # never raises for a body the plain checks took
    assert {f: getattr(plain, f) for f in FIELDS} == {f: getattr(model, f) for f in FIELDS}
    assert plain.options() == model.options() == {}


@pytest.mark.parametrize(
    ("data", "plain"),
    [
        ({"model": "m", "input": ["a", "b"]}, True),
        ({"model": "m", "input": "a", "encoding_format": "base64", "dimensions": 512, "user": "u"}, True),
        ({"model": "m", "input": None}, True),  # input is Any: its checks come later, per item
        ({"model": "m"}, False),
        ({"model": "", "input": "a"}, False),
        ({"model": 1, "input": "a"}, False),
        ({"model": "m", "input": "a", "dimensions": True}, False),
        ({"model": "m", "input": "a", "dimensions": 0}, False),
        ({"model": "m", "input": "a", "dimensions": 1.0}, False),
        ({"model": "m", "input": "a", "encoding_format": "Float"}, False),
        ({"model": "m", "input": "a", "encoding_format": ["float"]}, False),
        ({"model": "m", "input": "a", "user": 3}, False),
        ({"model": "m", "input": "a", "text_type": "query"}, False),  # a DashScope option: pydantic's
        ({"model": "m", "input": "a", "unknown": 1}, False),
    ],
)
def test_plain_bodies_and_the_rest(data: dict[str, Any], plain: bool) -> None:
    assert (plain_request(data) is not None) is plain
    same_as_pydantic(data)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_whatever_the_plain_checks_accept_pydantic_accepts_alike(data: dict[str, Any]) -> None:
    same_as_pydantic(data)
