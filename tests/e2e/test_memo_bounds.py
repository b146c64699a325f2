"""The bounded memos on the hit path (app/runtime/memo.py), seen from a client of the real gateway with the
defaults (auth on, hot cache on): a flood of distinct long texts (TextItems, some of them astral: four bytes a
character; KeyMemo, the keys of the ASCII ones) and of answer shapes (Skeletons: a shape is the model, the
billed tokens and the count, so one new text of a chosen length among cached ones makes a new shape), each
more than its memo may hold. After every request the memos' gauges on /metrics stay within their caps
(bytes and entries), and every answer holds the stand-in's vectors for its texts, in order."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.api.answer import MAX_SKELETON_BYTES, MAX_SKELETONS, MAX_SKELETONS_BYTES, PIECE_BYTES
from app.cache.keys import MEMO_KEYS, MEMO_KEYS_BYTES
from app.inputs.items import MEMO_TEXT_CHARS, MEMO_TEXTS, MEMO_TEXTS_BYTES
from bench.standin import expected_vector
from tests.support.processes import Gateway, GatewayFactory

MODEL = "text-embedding-3-small"  # an OpenAI-compatible upstream: one upstream call for a whole request
DIM = 8  # small answers: every one is written at once, its JSON from Skeletons
CAPS = {
    "texts": (MEMO_TEXTS_BYTES, MEMO_TEXTS),
    "skeletons": (MAX_SKELETONS_BYTES, MAX_SKELETONS),
    "keys": (MEMO_KEYS_BYTES, MEMO_KEYS),
}
POOL = 200  # short cached texts, the body of each shape's request
COUNTS = range(120, 161)  # entries per shape: 12-16 KB each (MAX_SKELETON_BYTES), so 300 fill the bytes cap


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory) -> Gateway:
    return gateways.start()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.client(timeout=60.0) as c:
        yield c


def held(client: httpx.Client) -> dict[str, tuple[float, float]]:
    """Each memo's (bytes, entries), from /metrics (its lines of the memos' gauges: the whole exposition parsed
    took longer than the request)."""
    lines = "".join(line + "\n" for line in client.get("/metrics").text.splitlines() if "gateway_memo_" in line)
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(lines):
        for sample in family.samples:
            values[family.name, sample.labels["memo"]] = sample.value
    return {memo: (values["gateway_memo_bytes", memo], values["gateway_memo_entries", memo]) for memo in CAPS}


def embed(client: httpx.Client, texts: list[str]) -> dict[str, Any]:
    """The answer for `texts` (sent as UTF-8), checked against the stand-in's vectors."""
    body = orjson.dumps({"model": MODEL, "input": texts, "dimensions": DIM, "encoding_format": "float"})
    r = client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    answer: dict[str, Any] = r.json()
    assert answer["model"] == MODEL and [d["index"] for d in answer["data"]] == list(range(len(texts)))
    got = np.asarray([d["embedding"] for d in answer["data"]], dtype=np.float32)
    np.testing.assert_array_equal(got, np.stack([vector(text) for text in texts]))
    return answer


@functools.cache
def vector(text: str) -> np.ndarray:
    return expected_vector(MODEL, DIM, text)


def within_caps(client: httpx.Client, most: dict[str, float]) -> None:
    for memo, (held_bytes, entries) in held(client).items():
        max_bytes, max_entries = CAPS[memo]
        assert held_bytes <= max_bytes and entries <= max_entries, (memo, held_bytes, entries)
        most[memo] = max(most[memo], held_bytes)


def test_floods_of_texts_and_shapes_stay_within_the_memos_caps(client: httpx.Client) -> None:
    most = dict.fromkeys(CAPS, 0.0)
    within_caps(client, most)
    # Texts: 8,000 distinct ones of 508 characters: one in five astral (~6.6 KB each kept, 10.6 MB in all),
    # the others ASCII (~1.4 KB each, 9 MB; their keys, kept as their identities are short enough: ~0.8 KB, 4.9 MB)
    salt = itertools.count()
    for batch in range(80):
        fill = "x" if batch % 5 else "\U0001f600"
        texts = [f"{next(salt):07d}-" + fill * (MEMO_TEXT_CHARS - 12) for _ in range(100)]
        embed(client, texts)
        within_caps(client, most)
    assert most["texts"] > MEMO_TEXTS_BYTES / 2 and most["keys"] > MEMO_KEYS_BYTES / 2  # the floods reached the bounds
    # Shapes: one new text of 4 x n characters (n billed tokens, the stand-in's count) among `count - 1` cached
    # ones: 41 counts x 10 token counts = 410 shapes of 120-160 entries, about 5.5 MB
    pool = [f"pool text {i}" for i in range(POOL)]
    embed(client, pool)
    for tokens, count in itertools.product(range(2, 12), COUNTS):
        new = f"{next(salt):07d}-".ljust(4 * tokens, "y")
        answer = embed(client, [new, *pool[: count - 1]])
        assert answer["usage"]["prompt_tokens"] == tokens  # the shape is the one meant
        within_caps(client, most)
    assert most["skeletons"] > MAX_SKELETONS_BYTES / 2
    # A shape too large to keep (its entries' pieces alone pass MAX_SKELETON_BYTES) is rendered every time
    count = MAX_SKELETON_BYTES // PIECE_BYTES + 1
    for _ in range(2):
        embed(client, [f"{next(salt):07d}-large", *(pool * 2)[: count - 1]])
    within_caps(client, most)
