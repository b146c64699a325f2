"""EmbeddingService over the miss path as create_app wires it (flights, upstream caller, guard), unit-tested
with a small fake Upstream adapter: chunking to the batch limit, bounded concurrency, order, duplicates sent
once, partial failures cached. (End-to-end tests use the real stand-in instead.)"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.cache.lru import MemoryCache
from app.config.catalog import ModelSpec
from app.config.upstream import UpstreamConfig
from app.errors import RateLimited, Unavailable, UpstreamFailed
from app.flights.batcher import BASE64_CALL_VALUES, CALL_ANSWER_BYTES, FLOAT_CALL_VALUES, call_values_of
from app.inputs.items import Item, openai_items
from app.inputs.params import Params
from app.limits.window import TeamQuota
from app.metrics import Metrics
from app.runtime.budget import MemoryBudget
from app.service import EmbeddingService, EmbedRequest
from app.teams.team import Team
from app.upstreams.adapter import Batch, Result
from app.upstreams.caller import OpenGate
from app.upstreams.fleet import Fleet
from tests.support.misspath import miss_path

DIM = 8
SPEC = ModelSpec(name="m", upstream="fake", upstream_model="m-1", dimensions=(DIM,), default_dimension=DIM, max_batch=3)


def vector(item: Item) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(item.identity).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class FakeUpstream:
    name = "fake"
    kind = "dashscope"

    def __init__(self, delay: float = 0.01, fail: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[list[str]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def embed(self, batch: Batch) -> Result:
        texts = [it.parts["text"] for it in batch.items]
        self.batches.append(texts)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.fail & set(texts):
            raise UpstreamFailed("upstream fake: failed")
        return Result(np.stack([vector(it) for it in batch.items]), billed_tokens=10 * len(texts))

    async def close(self) -> None:
        return None


class CountingGate:
    def __init__(self) -> None:
        self.admitted: list[int] = []

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> None:
        self.admitted.append(tokens)


def service(upstream: FakeUpstream, **options: Any) -> EmbeddingService:
    """The miss path over `upstream` alone; `options`: miss_path's (cache, concurrency, gate, call_values,
    memory)."""
    return miss_path({"fake": upstream}, Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"]), **options)


def request(texts: list[str], **kw: bool) -> EmbedRequest:
    return EmbedRequest(SPEC, Params(DIM, False), openai_items(texts, SPEC, 1000), **kw)


def as_arrays(vectors: list[bytes]) -> list[np.ndarray]:
    return [np.frombuffer(v, dtype="<f4") for v in vectors]


def expected(texts: list[str]) -> list[np.ndarray]:
    return [vector(it) for it in openai_items(texts, SPEC, 1000)]


async def test_misses_are_chunked_to_the_batch_limit_and_reassembled_in_order() -> None:
    up = FakeUpstream()
    texts = [f"t{i}" for i in range(10)]
    result = await service(up).embed(None, request(texts))
    assert sorted(len(b) for b in up.batches) == [1, 3, 3, 3]
    assert sorted(t for b in up.batches for t in b) == sorted(texts)
    for got, want in zip(as_arrays(result.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (result.hits, result.misses, result.billed_tokens, result.upstream_items) == (0, 10, 100, 10)


async def test_a_call_asks_for_its_upstream_s_vector_values_at_most() -> None:
    """An answer is parsed on the event loop in one go: a call's items are cut so that it holds at most the
    upstream's vector values (80 here: 10 vectors of 8), below the model's batch limit (100)."""
    wide = ModelSpec(name="m", upstream="fake", upstream_model="m-1", dimensions=(DIM,), default_dimension=DIM,
                     max_batch=100)  # fmt: skip
    texts = [f"w{i}" for i in range(25)]
    up = FakeUpstream()
    result = await service(up, call_values={"fake": 10 * DIM}).embed(
        None, EmbedRequest(wide, Params(DIM, False), openai_items(texts, wide, 1000))
    )
    assert sorted(len(b) for b in up.batches) == [5, 10, 10]
    for got, want in zip(as_arrays(result.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)
    up = FakeUpstream()  # by default, FLOAT_CALL_VALUES: 32,768 vectors of 8, so the batch limit decides
    await service(up).embed(None, EmbedRequest(wide, Params(DIM, False), openai_items(texts, wide, 1000)))
    assert [len(b) for b in up.batches] == [25]
    configs = {
        "a": UpstreamConfig(kind="openai", base_url="http://x/v1", encoding_format="base64"),
        "b": UpstreamConfig(kind="openai", base_url="http://x/v1"),
        "c": UpstreamConfig(kind="dashscope"),
    }
    assert call_values_of(configs) == {"a": BASE64_CALL_VALUES, "b": FLOAT_CALL_VALUES, "c": FLOAT_CALL_VALUES}


async def test_calls_wait_for_room_in_the_memory_budget_for_their_answers() -> None:
    """A call's answer is held whole while it is received: a call of a full call's values takes
    CALL_ANSWER_BYTES first. Room for two: two calls in flight at once, not the guard's eight; every vector
    right, in order, and the room given back; room for half a call: one call at a time, never refused for
    its size. With the room held by others past the wait, the requests get 503 (memory_budget)."""
    wide = ModelSpec(name="m", upstream="fake", upstream_model="m-1", dimensions=(DIM,), default_dimension=DIM,
                     max_batch=100)  # fmt: skip
    texts = [f"wide{i}" for i in range(60)]
    memory = MemoryBudget(2 * CALL_ANSWER_BYTES + 1024, wait_s=5.0)
    up = FakeUpstream(delay=0.05)
    result = await service(up, call_values={"fake": 10 * DIM}, memory=memory).embed(
        None, EmbedRequest(wide, Params(DIM, False), openai_items(texts, wide, 1000))
    )
    assert [len(b) for b in up.batches] == [10] * 6 and up.max_in_flight == 2
    for got, want in zip(as_arrays(result.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)
    assert memory.free == memory.max_bytes
    alone = FakeUpstream(delay=0.05)  # room for less than one call: each call takes it all, one at a time
    memory = MemoryBudget(CALL_ANSWER_BYTES // 2, wait_s=5.0)
    await service(alone, call_values={"fake": 10 * DIM}, memory=memory).embed(
        None, EmbedRequest(wide, Params(DIM, False), openai_items([f"s{t}" for t in texts], wide, 1000))
    )
    assert len(alone.batches) == 6 and alone.max_in_flight == 1 and memory.free == memory.max_bytes
    small = FakeUpstream()  # calls under 64 KiB take nothing: the miss path's usual calls
    await service(small, memory=MemoryBudget(1 << 20, wait_s=0.0)).embed(None, request(["s1", "s2"]))
    assert len(small.batches) == 1
    none, full = FakeUpstream(), MemoryBudget(1 << 20, wait_s=0.0)
    await full.lease().take(1 << 20, "input")  # held by another call
    with pytest.raises(Unavailable) as refused:
        await service(none, call_values={"fake": 10 * DIM}, memory=full).embed(
            None, EmbedRequest(wide, Params(DIM, False), openai_items([f"n{i}" for i in range(10)], wide, 1000))
        )
    assert refused.value.code == "memory_budget" and none.batches == []


async def test_chunks_are_concurrent_and_bounded() -> None:
    up = FakeUpstream(delay=0.05)
    await service(up, concurrency=2).embed(None, request([f"t{i}" for i in range(15)]))
    assert len(up.batches) == 5 and up.max_in_flight == 2
    up = FakeUpstream(delay=0.05)
    await service(up, concurrency=8).embed(None, request([f"t{i}" for i in range(15)]))
    assert up.max_in_flight == 5


async def test_every_chunk_passes_the_gate() -> None:
    up, gate = FakeUpstream(), CountingGate()
    svc = service(up, gate=gate)
    await svc.embed(None, request([f"t{i}" for i in range(7)]))
    assert sorted(gate.admitted) == [1, 3, 3]


async def test_duplicates_are_sent_once_and_every_position_answered() -> None:
    up = FakeUpstream()
    texts = ["a", "b", "a", "c", "b", "a"]
    result = await service(up).embed(None, request(texts))
    assert sorted(t for b in up.batches for t in b) == ["a", "b", "c"]
    for got, want in zip(as_arrays(result.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)
    assert result.billed_tokens == 30 and result.upstream_items == 3


async def test_hits_cost_nothing_and_mixed_batches_send_only_misses() -> None:
    up = FakeUpstream()
    svc = service(up)
    await svc.embed(None, request(["a", "b"]))
    up.batches.clear()
    full = await svc.embed(None, request(["b", "a", "b"]))
    assert up.batches == [] and (full.hits, full.misses, full.billed_tokens) == (3, 0, 0)
    texts = ["x", "a", "y", "b", "x"]
    mixed = await svc.embed(None, request(texts))
    assert sorted(t for b in up.batches for t in b) == ["x", "y"]
    assert (mixed.hits, mixed.misses, mixed.billed_tokens) == (2, 3, 20)
    for got, want in zip(as_arrays(mixed.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)


async def test_a_failed_chunk_raises_and_the_others_are_cached() -> None:
    up = FakeUpstream(fail=frozenset({"t4"}))
    svc = service(up)
    texts = [f"t{i}" for i in range(9)]
    with pytest.raises(UpstreamFailed):
        await svc.embed(None, request(texts))
    failed_chunk = next(b for b in up.batches if "t4" in b)
    up.batches.clear()
    up.fail = frozenset()
    result = await svc.embed(None, request(texts))
    assert [sorted(b) for b in up.batches] == [sorted(failed_chunk)]  # only the failed chunk is paid again
    assert result.hits == 6 and result.misses == 3
    for got, want in zip(as_arrays(result.vectors), expected(texts), strict=True):
        np.testing.assert_array_equal(got, want)


async def test_cache_control() -> None:
    up = FakeUpstream()
    cache = MemoryCache(1 << 20)
    svc = service(up, cache=cache)
    await svc.embed(None, request(["a"], cache_write=False))
    assert cache._data == {}
    await svc.embed(None, request(["a"]))
    up.batches.clear()
    result = await svc.embed(None, request(["a"], cache_read=False))
    assert up.batches == [["a"]] and result.hits == 0 and result.billed_tokens == 10


async def test_a_cached_value_of_the_wrong_size_is_a_miss() -> None:
    up = FakeUpstream()
    cache = MemoryCache(1 << 20)
    svc = service(up, cache=cache)
    await svc.embed(None, request(["a"]))
    (key,) = cache._data
    await cache.set_many([(key, b"\x00" * 12)])
    up.batches.clear()
    result = await svc.embed(None, request(["a"]))
    assert up.batches == [["a"]] and result.hits == 0
    np.testing.assert_array_equal(as_arrays(result.vectors)[0], expected(["a"])[0])


def test_every_upstream_needs_its_guard() -> None:
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    with pytest.raises(ValueError, match="no guard for upstream"):
        Fleet({"fake": FakeUpstream()}, {}, metrics, OpenGate())


class Reply:
    headers: Sequence[tuple[bytes, bytes]] | None = None
    key_id = ""  # the caller's key id (the usage ledger), as the route's Exchange names it


async def test_one_call_admits_the_misses_bills_them_and_sets_the_headers() -> None:
    """The team's admission is inside the one call: misses reserve their estimate and are corrected to the
    bill (10 tokens a text here), a whole hit is admitted with 0 tokens, and once the team's tokens are spent
    a miss is refused before any upstream call, with the headers already on the reply."""
    up = FakeUpstream()
    svc = service(up)
    team = Team("search", None, TeamQuota(tpm=20))
    reply = Reply()
    first = await svc.embed(team, request(["a", "b"]), reply)
    assert first.billed_tokens == 20 and up.batches == [["a", "b"]]
    assert reply.headers is not None and dict(reply.headers)[b"x-ratelimit-remaining-tokens"] == b"0"
    hit = Reply()
    again = await svc.embed(team, request(["b", "a"]), hit)  # a whole hit: 0 tokens, passes
    assert again.hits == 2 and again.billed_tokens == 0 and hit.headers is not None
    assert dict(hit.headers)[b"x-ratelimit-remaining-tokens"] == b"0"  # nothing reserved for the hit (reset moves on)
    refused = Reply()
    with pytest.raises(RateLimited):
        await svc.embed(team, request(["c"]), refused)
    assert up.batches == [["a", "b"]]  # the refused miss never went upstream
    assert refused.headers is not None and dict(refused.headers)[b"x-ratelimit-limit-tokens"] == b"20"
    other = await svc.embed(Team("other", None, TeamQuota(tpm=20)), request(["c"]), None)
    assert other.misses == 1  # another team's limits are its own
