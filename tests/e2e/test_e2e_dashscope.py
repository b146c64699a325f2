"""End to end with the official `dashscope` SDK (sync and async), pointed at the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dashscope
import httpx
import numpy as np
import pytest
from dashscope import (
    AioMultiModalEmbedding,
    MultiModalEmbedding,
    MultiModalEmbeddingItemImage,
    MultiModalEmbeddingItemText,
    TextEmbedding,
)
from dashscope.api_entities.aio_session import close_shared_aio_session

from bench.standin import expected_vector
from tests.support.processes import Gateway, StandIn
from tests.support.samples import data_uri, png

URL = "https://example.com/bike.jpg"
MM_PATH = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"


@pytest.fixture(autouse=True)
def sdk(gateway_redis: Gateway, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(dashscope, "base_http_api_url", gateway_redis.url + "/api/v1")
    monkeypatch.setattr(dashscope, "api_key", gateway_redis.key)
    yield


def salt() -> str:
    return uuid.uuid4().hex[:12]


def by_position(embeddings: list[dict[str, Any]], key: str) -> list[np.ndarray]:
    ordered = sorted(embeddings, key=lambda e: e[key])
    assert [e[key] for e in ordered] == list(range(len(ordered)))
    return [np.asarray(e["embedding"], dtype=np.float32) for e in ordered]


def assert_vectors(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_multimodal_call(standin: StandIn) -> None:
    s = salt()
    image = data_uri(png([1, 2, 3, 4, 5]))
    contents: list[Any] = [{"text": f"a road bike {s}"}, {"image": URL}, {"image": image}, f"bare {s}"]
    resp = MultiModalEmbedding.call(model="tongyi-embedding-vision-plus", input=contents, dimension=512)
    assert resp.status_code == 200, resp.message
    assert resp.request_id
    embeddings = resp.output["embeddings"]
    assert [e["type"] for e in sorted(embeddings, key=lambda e: e["index"])] == ["text", "image", "image", "text"]
    want = [expected_vector("tongyi-embedding-vision-plus", 512, c) for c in contents]
    assert_vectors(by_position(embeddings, "index"), want)
    assert resp.usage["total_tokens"] > 0
    again = MultiModalEmbedding.call(model="tongyi-embedding-vision-plus", input=contents, dimension=512)
    assert again.status_code == 200 and again.usage["total_tokens"] == 0
    assert_vectors(by_position(again.output["embeddings"], "index"), want)
    assert len(standin.calls()) == 1


def test_the_sdk_item_classes_with_factor() -> None:
    text = f"weighted {salt()}"
    items = [MultiModalEmbeddingItemText(text=text, factor=0.5), MultiModalEmbeddingItemImage(image=URL, factor=2)]
    resp = MultiModalEmbedding.call(model="tongyi-embedding-vision-plus", input=items, dimension=256)
    assert resp.status_code == 200, resp.message
    want = [
        expected_vector("tongyi-embedding-vision-plus", 256, {"text": text, "factor": 0.5}),
        expected_vector("tongyi-embedding-vision-plus", 256, {"image": URL, "factor": 2}),
    ]
    assert_vectors(by_position(resp.output["embeddings"], "index"), want)


def test_text_call_with_text_type() -> None:
    texts = [f"query {i} {salt()}" for i in range(3)]
    resp = TextEmbedding.call(model="text-embedding-v4", input=texts, dimension=256, text_type="query")
    assert resp.status_code == 200, resp.message
    want = [expected_vector("text-embedding-v4", 256, t, {"text_type": "query"}) for t in texts]
    assert_vectors(by_position(resp.output["embeddings"], "text_index"), want)
    assert resp.usage["total_tokens"] == sum(max(1, len(t) // 4) for t in texts)
    single = TextEmbedding.call(model="text-embedding-v4", input=texts[1], dimension=256, text_type="query")
    assert single.status_code == 200 and single.usage["total_tokens"] == 0
    assert_vectors(by_position(single.output["embeddings"], "text_index"), want[1:2])


async def test_async_client() -> None:
    s = salt()
    contents: list[Any] = [{"text": f"async {s}"}, {"image": URL}]
    resp = await AioMultiModalEmbedding.call(model="tongyi-embedding-vision-flash", input=contents, dimension=256)
    assert resp.status_code == 200, resp.message
    want = [expected_vector("tongyi-embedding-vision-flash", 256, c) for c in contents]
    assert_vectors(by_position(resp.output["embeddings"], "index"), want)
    bad = await AioMultiModalEmbedding.call(model="tongyi-embedding-vision-flash", input=contents, dimension=1152)
    await close_shared_aio_session()
    assert bad.status_code == 400 and bad.code == "InvalidParameter"
    assert "parameters.dimension" in bad.message


def test_errors_in_the_sdk_shape(standin: StandIn) -> None:
    bad = TextEmbedding.call(model="text-embedding-v4", input=["x"], dimension=100)
    assert bad.status_code == 400 and bad.code == "InvalidParameter"
    assert "parameters.dimension" in bad.message and bad.request_id
    missing = MultiModalEmbedding.call(model="no-such-model", input=[{"text": "x"}])
    assert missing.status_code == 404 and missing.code == "ModelNotFound"
    video = MultiModalEmbedding.call(
        model="tongyi-embedding-vision-plus", input=[{"text": "x"}, {"video": "data:video/mp4;base64,AAAA"}]
    )
    assert video.status_code == 400 and "input.contents[1].video" in video.message
    assert standin.calls() == []


def test_unknown_parameters_are_forwarded_and_keyed(standin: StandIn) -> None:
    text = f"truncate me {salt()}"
    resp = TextEmbedding.call(model="text-embedding-v4", input=[text], auto_truncation=True)
    assert resp.status_code == 200, resp.message
    want = expected_vector("text-embedding-v4", 1024, text, {"auto_truncation": True})
    assert_vectors(by_position(resp.output["embeddings"], "text_index"), [want])
    plain = TextEmbedding.call(model="text-embedding-v4", input=[text])
    assert plain.usage["total_tokens"] > 0  # a different vector: not served from the other's cache entry
    assert len(standin.calls()) == 2


def test_enable_fusion_gives_one_fused_vector() -> None:
    s = salt()
    contents: list[Any] = [{"text": f"fuse {s}"}, {"image": URL}]
    resp = MultiModalEmbedding.call(model="qwen3-vl-embedding", input=contents, enable_fusion=True, dimension=512)
    assert resp.status_code == 200, resp.message
    (only,) = resp.output["embeddings"]
    assert only["index"] == 0 and only["type"] == "fused"
    want = expected_vector("qwen3-vl-embedding", 512, {"fused": contents})
    np.testing.assert_array_equal(np.asarray(only["embedding"], dtype=np.float32), want)


def test_a_batch_over_the_limit_is_split_and_reassembled_in_order(standin: StandIn) -> None:
    texts = [f"text {i} {salt()}" for i in range(45)]
    resp = TextEmbedding.call(model="text-embedding-v4", input=texts)
    assert resp.status_code == 200, resp.message
    assert_vectors(
        by_position(resp.output["embeddings"], "text_index"),
        [expected_vector("text-embedding-v4", 1024, t) for t in texts],
    )
    calls = standin.calls()
    assert len(calls) == 5 and all(c["n_items"] <= 10 and not c["failed"] for c in calls)
    assert sum(c["n_items"] for c in calls) == 45


def test_form_encoded_content_type_is_read_as_json(gateway_redis: Gateway) -> None:
    body = b'{"model": "text-embedding-v4", "input": {"texts": ["curl ' + salt().encode() + b'"]}}'
    resp = httpx.post(
        gateway_redis.url + "/api/v1/services/embeddings/text-embedding/text-embedding",
        content=body,
        headers={**gateway_redis.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert len(resp.json()["output"]["embeddings"][0]["embedding"]) == 1024


def test_null_parameters_are_the_same_as_none(gateway_redis: Gateway, standin: StandIn) -> None:
    text = f"null params {salt()}"
    for parameters in (None, {}, {"dimension": None, "text_type": None}):
        resp = httpx.post(
            gateway_redis.url + "/api/v1/services/embeddings/text-embedding/text-embedding",
            json={"model": "text-embedding-v4", "input": {"texts": [text]}, "parameters": parameters},
            headers=gateway_redis.headers,
        )
        assert resp.status_code == 200, resp.text
        got = np.asarray(resp.json()["output"]["embeddings"][0]["embedding"], dtype=np.float32)
        np.testing.assert_array_equal(got, expected_vector("text-embedding-v4", 1024, text))
    assert len(standin.calls()) == 1  # one vector, one key
