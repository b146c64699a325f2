"""Answers (app/api/answer.py): small ones written at once; large ones in slices that join into the same
bytes, each slice bounded, with the bytes they may hold taken from the memory budget first."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.api import answer as answer_module
from app.api import dashscope
from app.api.answer import (
    MAX_SKELETONS,
    MAX_SKELETONS_BYTES,
    SLICE_BYTES,
    SMALL_ANSWER_BYTES,
    JSONAnswer,
    Skeletons,
    SlicedAnswer,
    _cut,
    answer,
    skeleton_bytes,
)
from app.api.vectortext import BASE64_RATIO, FLOAT_RATIO, VectorText, base64_json, float_json
from app.errors import Unavailable
from app.runtime.budget import MemoryBudget
from app.schemas.openai import document, entry
from tests.support.memory import assert_counted, traced_and_counted


def vectors(n: int, dim: int = 1024) -> list[bytes]:
    rng = np.random.default_rng(n)
    return [rng.standard_normal(dim).astype("<f4").tobytes() for _ in range(n)]


async def respond(
    vecs: list[bytes], text: VectorText, budget: MemoryBudget, model: str = "m", shapes: Skeletons | None = None
) -> tuple[Any, list[bytes], bytes]:
    """An answer of the OpenAI route's document and entry, and what orjson writes for it."""
    request = Request({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []})
    tokens = 3 * len(vecs)
    headers = {"x-cache-hits": "1"}
    response = await answer(request, budget, document, (model, tokens), entry, vecs, text, headers, shapes)
    entries = [{"object": "embedding", "index": i, "embedding": text.fragment(v)} for i, v in enumerate(vecs)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    whole = {"object": "list", "data": entries, "model": model, "usage": usage}  # with each vector's text in place
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, receive, send)
    return response, [m.get("body", b"") for m in sent[1:]], orjson.dumps(whole)


@pytest.mark.parametrize(("encode", "ratio"), [(float_json, FLOAT_RATIO), (base64_json, BASE64_RATIO)])
async def test_a_large_answer_is_the_same_bytes_in_bounded_slices(encode: Any, ratio: float) -> None:
    budget = MemoryBudget(64 << 20, wait_s=0)
    response, parts, whole = await respond(vectors(300), VectorText(1 << 20, encode, ratio), budget)
    assert isinstance(response, SlicedAnswer)
    assert b"content-length" not in dict(response.raw_headers)
    assert b"".join(parts) == whole
    assert len(parts) > 3 and parts[-1] == b""  # the last, empty, message waits for the drain
    assert max(len(p) for p in parts) < SLICE_BYTES + 20_000
    assert budget.max_bytes - budget.free >= 2 * SLICE_BYTES * 0.9  # two slices held until the request ends


async def test_a_small_answer_is_one_write_outside_the_budget() -> None:
    budget = MemoryBudget(64 << 20, wait_s=0)
    response, parts, whole = await respond(vectors(2), VectorText(1 << 20, float_json, FLOAT_RATIO), budget)
    assert not isinstance(response, SlicedAnswer) and parts == [whole] and len(whole) < SMALL_ANSWER_BYTES
    assert budget.free == budget.max_bytes


async def test_a_large_answer_without_room_in_the_budget_is_a_503() -> None:
    budget = MemoryBudget(1 << 20, wait_s=0)
    await budget.lease().take(budget.max_bytes - 1000, "input")
    with pytest.raises(Unavailable):
        await respond(vectors(300), VectorText(1 << 20, float_json, FLOAT_RATIO), budget)


async def test_an_answer_of_one_slice_is_written_with_its_length_and_counted() -> None:
    budget = MemoryBudget(64 << 20, wait_s=0)
    response, parts, whole = await respond(vectors(8), VectorText(1 << 20, float_json, FLOAT_RATIO), budget)
    assert isinstance(response, SlicedAnswer) and parts == [whole, b""]
    assert dict(response.raw_headers)[b"content-length"] == str(len(whole)).encode()
    assert SMALL_ANSWER_BYTES < len(whole) <= budget.max_bytes - budget.free


def test_answers_have_the_head_starlettes_response_would_give_them() -> None:
    headers = {"X-Cache-Hits": "8", "x-cache-misses": "0", "x-ratelimit-remaining-requests": "59"}
    whole = Response(b'{"a":1}', media_type="application/json", headers=headers)
    assert JSONAnswer(b'{"a":1}', headers).raw_headers == whole.raw_headers
    streamed = Response(None, media_type="application/json", headers=headers)
    sliced = [(k, v) for k, v in streamed.raw_headers if k != b"content-length"] + [(b"content-length", b"123")]
    assert SlicedAnswer(iter(()), headers, 123).raw_headers == sliced


@pytest.mark.parametrize(("encode", "ratio"), [(float_json, FLOAT_RATIO), (base64_json, BASE64_RATIO)])
async def test_answers_from_kept_shapes_are_what_orjson_writes(encode: Any, ratio: float) -> None:
    budget, shapes, text = MemoryBudget(64 << 20, wait_s=0), Skeletons(), VectorText(1 << 20, encode, ratio)
    for k, (model, n) in enumerate([("m", 2), ("m", 2), ("m", 3), ("other", 2), ("m", 8), ("m", 1), ("m", 2)]):
        vecs = vectors(n + 10 * k)[:n]  # other vectors each time: the shape is kept, not the answer
        _, parts, whole = await respond(vecs, text, budget, model, shapes)
        assert b"".join(parts) == whole


async def test_the_shapes_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answer_module, "MAX_SKELETONS", 2)
    three = skeleton_bytes(_cut(document, ("m", 9), entry, 3))
    monkeypatch.setattr(answer_module, "MAX_SKELETON_BYTES", three)  # shapes of up to 3 entries are kept
    budget, shapes, text = MemoryBudget(64 << 20, wait_s=0), Skeletons(), VectorText(1 << 20, float_json, FLOAT_RATIO)
    for n in [1, 2, 3, 4, 1, 2, 3, 4]:
        _, parts, whole = await respond(vectors(n, 16), text, budget, "m", shapes)
        assert b"".join(parts) == whole
        assert 0 < len(shapes.recent) <= 2 and all(count <= 3 for *_, count in shapes.recent)
        assert len(shapes.retiring) <= 2 and all(count <= 3 for *_, count in shapes.retiring)
        assert shapes.held_bytes <= 2 * three


def test_what_shapes_hold_is_within_what_they_count() -> None:
    """skeleton_bytes against tracemalloc, through the memo's fills and frees: within the count, but for the
    dicts' tables (docs/operations.md), and not far over it."""
    shapes = Skeletons()

    def add(k: int) -> None:
        count = 1 + k * 7 % 170  # up to 170 entries: some too big to be kept
        shapes.cut(document, ("text-embedding-v4", 1000 + k), entry, count)

    held = traced_and_counted(shapes, add, 3 * MAX_SKELETONS, 31)
    assert_counted(held, MAX_SKELETONS_BYTES, 48 * MAX_SKELETONS)


def test_the_routes_documents_read_only_their_arguments() -> None:
    """Skeletons keys on (document, entry, facts, count): a document or entry that read anything else (a
    closure's request, say) would have it rendered once and served to every later answer of the same shape."""
    for function in (document, entry, dashscope._document):
        assert function.__closure__ is None and "." not in function.__qualname__, function


def test_a_kept_shape_is_one_documents() -> None:
    """Two documents (routes) of the same facts and count keep a shape each."""
    shapes = Skeletons()

    def other(data: Any, facts: tuple[str, int]) -> dict[str, Any]:
        return {"data": data, "facts": list(facts)}

    one, two = shapes.cut(document, ("m", 3), entry, 2), shapes.cut(other, ("m", 3), entry, 2)
    assert one != two and b'"facts":["m",3]' in two[-1]
    assert shapes.cut(document, ("m", 3), entry, 2) is one
