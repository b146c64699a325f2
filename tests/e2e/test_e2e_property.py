"""Property: random batches mixing cached and new items, duplicates, texts and images, sent through the
gateway (with Redis) on both wire formats. Every returned vector is the vector of that item requested alone
(and the upstream's own), and the upstream saw each distinct item exactly once."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from typing import Any

import httpx
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.standin import canonical_digest, expected_vector
from tests.support.processes import Gateway, StandIn
from tests.support.samples import data_uri, jpeg, png

MODEL = "tongyi-embedding-vision-plus"
DIM = 64
KINDS = ("text", "png", "jpeg", "url")


def make_item(kind: str, i: int, salt: bytes) -> Any:
    if kind == "text":
        return f"item {i} {salt.hex()}"
    if kind == "png":
        return {"image": data_uri(png([*salt, i], width=len(salt) + 1))}
    if kind == "jpeg":
        return {"image": data_uri(jpeg(i * 37 % 256, salt), "image/jpeg")}
    return {"image": f"https://example.com/{salt.hex()}/{i}.png"}


def embed(client: httpx.Client, items: list[Any], route: str, as_base64: bool) -> list[np.ndarray]:
    if route == "openai":
        body: dict[str, Any] = {"model": MODEL, "input": items, "dimensions": DIM}
        if as_base64:
            body["encoding_format"] = "base64"
        resp = client.post("/v1/embeddings", json=body)
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert [d["index"] for d in data] == list(range(len(items)))
        if as_base64:
            return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
        return [np.asarray(d["embedding"], dtype=np.float32) for d in data]
    resp = client.post(
        "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
        json={"model": MODEL, "input": {"contents": items}, "parameters": {"dimension": DIM}},
    )
    assert resp.status_code == 200, resp.text
    rows = sorted(resp.json()["output"]["embeddings"], key=lambda e: e["index"])
    assert [e["index"] for e in rows] == list(range(len(items)))
    return [np.asarray(e["embedding"], dtype=np.float32) for e in rows]


requests_strategy = st.lists(
    st.tuples(
        st.lists(st.integers(0, 7), min_size=1, max_size=12),  # positions into the example's pool
        st.sampled_from(["openai", "dashscope"]),
        st.booleans(),  # base64 on the OpenAI route
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=8, max_size=8), requests=requests_strategy)
def test_vectors_are_per_item_and_each_item_goes_upstream_once(
    gateway_redis: Gateway, standin: StandIn, kinds: list[str], requests: list[tuple[list[int], str, bool]]
) -> None:
    salt = uuid.uuid4().bytes[:6]  # this example's items are new to the cache and to every other example
    pool = [make_item(kind, i, salt) for i, kind in enumerate(kinds)]
    want = [expected_vector(MODEL, DIM, item) for item in pool]
    digests = [canonical_digest(MODEL, DIM, item) for item in pool]
    used: set[int] = set()
    with gateway_redis.client() as client:
        for positions, route, as_base64 in requests:
            got = embed(client, [pool[p] for p in positions], route, as_base64)
            for p, vector in zip(positions, got, strict=True):
                np.testing.assert_array_equal(vector, want[p])
            used.update(positions)
        for p in sorted(used):  # each item alone: the same vector, now from the cache
            (alone,) = embed(client, [pool[p]], "openai", False)
            np.testing.assert_array_equal(alone, want[p])
    seen = Counter(d for d in standin.digests() if d in set(digests))
    assert seen == Counter({digests[p]: 1 for p in used})
