"""The retry policy, deadline and breaker of one upstream (the fleet with one deployment: guard.py and
fleet.py) and the Batcher, as plain units with an injected clock and sleep. Several deployments:
test_fleet.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from app.cache.tickbatch import TickBatcher
from app.config.catalog import ModelSpec
from app.errors import (
    GatewayError,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamInvalid,
    UpstreamMisconfigured,
    UpstreamRejected,
    UpstreamTimeout,
)
from app.flights.batcher import Batcher, Pending, apportion
from app.inputs.items import Item
from app.inputs.params import Params
from app.metrics import Metrics
from app.upstreams.adapter import Batch, Result
from app.upstreams.breaker import CircuitBreaker
from app.upstreams.fleet import Fleet
from app.upstreams.guard import Guard, RetryPolicy
from tests.support.faketime import FakeTime

ONE = ModelSpec(name="m", upstream="up", upstream_model="m", default_dimension=4, dimensions=(4,))


class Sending:
    """An adapter whose answer is `send()`'s (kept in `.last`)."""

    name, kind = "up", "openai"

    def __init__(self, send: Callable[[], Awaitable[str]]) -> None:
        self.send = send
        self.last = ""

    async def embed(self, batch: Batch) -> Result:
        self.last = await self.send()
        return Result(np.zeros((len(batch.items), 4), dtype="<f4"), 0)

    async def close(self) -> None:
        return None


class Admitting:
    """A quota gate that runs `admit()` before every attempt."""

    def __init__(self, admit: Callable[[], Awaitable[None]]) -> None:
        self.admit = admit

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> None:
        await self.admit()


class One:
    """One upstream behind the fleet: `run(send, admit, deadline)` is one call with its retries."""

    def __init__(self, t: FakeTime, failures: int, attempts: int) -> None:
        self.t = t
        self.breaker = CircuitBreaker("up", failures=failures, open_s=10.0, clock=t.clock)
        self.guard = Guard(self.breaker, RetryPolicy(attempts, 0.1, 1.0), concurrency=4)
        self.metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["up"])

    async def run(
        self, send: Callable[[], Awaitable[str]], admit: Callable[[], Awaitable[None]], deadline: float
    ) -> str:
        adapter = Sending(send)
        t = self.t
        fleet = Fleet(
            {"up": adapter},
            {"up": self.guard},
            self.metrics,
            Admitting(admit),
            clock=t.clock,
            sleep=t.sleep,
            rng=random.Random(1),
        )
        await fleet.call(Batch(ONE, Params(4, True), [item("a")]), deadline)
        return adapter.last


def guard(t: FakeTime, failures: int = 5, attempts: int = 6) -> One:
    return One(t, failures, attempts)


def script(*outcomes: GatewayError | str) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls = [0]

    async def send() -> str:
        outcome = outcomes[min(calls[0], len(outcomes) - 1)]
        calls[0] += 1
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    return calls, send


async def admit() -> None:
    return None


def limited(after: float | None) -> RateLimited:
    err = RateLimited("slow down", retry_after=after or 1.0)
    err.upstream_retry_after = after
    return err


async def test_retries_5xx_and_timeouts_with_growing_jittered_backoff() -> None:
    t = FakeTime()
    calls, send = script(UpstreamFailed("500"), UpstreamTimeout("slow"), UpstreamFailed("reset"), "ok")
    assert await guard(t).run(send, admit, deadline=t.now + 30) == "ok"
    assert calls[0] == 4
    assert len(t.slept) == 3
    for i, s in enumerate(t.slept):
        ceiling = min(1.0, 0.1 * 2**i)
        assert ceiling / 2 <= s <= ceiling


async def test_honours_retry_after_of_a_429() -> None:
    t = FakeTime()
    _, send = script(limited(2.5), "ok")
    assert await guard(t).run(send, admit, deadline=t.now + 30) == "ok"
    assert t.slept == [2.5]


async def test_gives_up_at_once_when_retry_after_passes_the_deadline() -> None:
    t = FakeTime()
    calls, send = script(limited(20.0), "ok")
    with pytest.raises(RateLimited):
        await guard(t).run(send, admit, deadline=t.now + 5)
    assert calls[0] == 1 and t.slept == []


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRejected("bad", status=400),
        UpstreamMisconfigured("key", code="upstream_auth"),
        UpstreamMisconfigured("moved", code="upstream_redirect"),
        UpstreamInvalid("answered vectors of the wrong length (expected 4)"),
    ],
)
async def test_never_retries_validation_credential_or_poison_errors(error: GatewayError) -> None:
    t = FakeTime()
    calls, send = script(error, "ok")
    with pytest.raises(type(error)):
        await guard(t).run(send, admit, deadline=t.now + 30)
    assert calls[0] == 1


async def test_poison_answers_do_not_open_the_breaker() -> None:
    t = FakeTime()
    g = guard(t, failures=2)
    _, poison = script(UpstreamInvalid("answered a body that is not JSON"))
    for _ in range(5):
        with pytest.raises(UpstreamInvalid):
            await g.run(poison, admit, deadline=t.now + 30)
    assert g.breaker.state == "closed"
    calls, ok = script("ok")
    assert await g.run(ok, admit, deadline=t.now + 30) == "ok" and calls[0] == 1


async def test_attempts_are_bounded() -> None:
    t = FakeTime()
    calls, send = script(limited(None))
    with pytest.raises(RateLimited):
        await guard(t, attempts=3).run(send, admit, deadline=t.now + 300)
    assert calls[0] == 3


async def test_gate_runs_before_every_attempt_and_its_refusal_is_not_retried() -> None:
    t = FakeTime()
    admitted = []

    async def counting() -> None:
        admitted.append(1)

    calls, send = script(UpstreamFailed("500"), "ok")
    await guard(t).run(send, counting, deadline=t.now + 30)
    assert len(admitted) == 2

    async def refusing() -> None:
        raise RateLimited("quota", retry_after=3)

    calls, send = script("ok")
    with pytest.raises(RateLimited):
        await guard(t).run(send, refusing, deadline=t.now + 30)
    assert calls[0] == 0


async def test_breaker_opens_answers_at_once_then_probes_once() -> None:
    t = FakeTime()
    g = guard(t, failures=3, attempts=1)
    _, failing = script(UpstreamFailed("500"))
    for _ in range(3):
        with pytest.raises(UpstreamFailed):
            await g.run(failing, admit, deadline=t.now + 30)
    calls, ok = script("ok")
    with pytest.raises(Unavailable) as info:
        await g.run(ok, admit, deadline=t.now + 30)
    assert calls[0] == 0 and info.value.status == 503 and info.value.retry_after == pytest.approx(10.0)
    t.now += 10.0
    # Half-open: the first call is the probe; while it is out, others are refused.
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    probe = asyncio.ensure_future(g.run(slow, admit, deadline=t.now + 30))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await g.run(ok, admit, deadline=t.now + 30)
    release.set()
    assert await probe == "ok"
    assert g.breaker.state == "closed"
    assert await g.run(ok, admit, deadline=t.now + 30) == "ok"


async def test_429_does_not_open_the_breaker() -> None:
    t = FakeTime()
    g = guard(t, failures=2, attempts=1)
    _, throttled = script(limited(None))
    for _ in range(5):
        with pytest.raises(RateLimited):
            await g.run(throttled, admit, deadline=t.now + 30)
    assert g.breaker.state == "closed"


@given(st.integers(0, 10**7), st.lists(st.integers(0, 10**5), min_size=1, max_size=50))
def test_apportion_adds_up_and_follows_the_weights(total: int, weights: list[int]) -> None:
    shares = apportion(total, weights)
    assert sum(shares) == total and all(s >= 0 for s in shares)
    weight = sum(weights) or len(weights)
    for s, w in zip(shares, weights if sum(weights) else [1] * len(weights), strict=True):
        assert abs(s - total * w / weight) < 1


SPEC = ModelSpec(name="m", upstream="up", upstream_model="m", default_dimension=4, max_batch=3)


class Caller:
    """An UpstreamCaller over a plain function of (spec, params, items, deadline)."""

    def __init__(self, send: Callable[[ModelSpec, Params, list[Item], float], Awaitable[Result]]) -> None:
        self.send = send

    async def call(self, batch: Batch, deadline: float) -> Result:
        return await self.send(batch.spec, batch.params, list(batch.items), deadline)


class Landing:
    """The batcher's Landing over a plain function of (pendings, ok)."""

    def __init__(self, done: Callable[[list[Pending], bool], Awaitable[None]]) -> None:
        self.done = done

    async def land(self, pendings: list[Pending], ok: bool) -> None:
        await self.done(pendings, ok)


def item(text: str) -> Item:
    return Item("text", {"text": text}, text.encode(), len(text))


async def test_batcher_combines_concurrent_items_up_to_the_batch_limit() -> None:
    sent: list[list[str]] = []

    async def send(spec: ModelSpec, params: Params, items: list[Item], deadline: float) -> Result:
        sent.append([it.parts["text"] for it in items])
        await asyncio.sleep(0)
        vectors = np.asarray([[len(it.parts["text"])] * 4 for it in items], dtype=np.float32)
        return Result(vectors, billed_tokens=sum(len(it.parts["text"]) for it in items))

    delivered: list[int] = []

    async def done(pendings: list[Pending], ok: bool) -> None:
        delivered.append(len(pendings))

    batcher = Batcher(Caller(send), Landing(done), window_s=0.01)
    loop = asyncio.get_running_loop()
    pendings = []
    for text in ["a", "bb", "ccc", "dddd", "eeeee"]:
        p = Pending(text, item(text), loop.create_future(), deadline=0.0, write=True)
        pendings.append(p)
        batcher.submit(SPEC, Params(4, False), [p])
    answers = await asyncio.gather(*(p.future for p in pendings))
    assert sent == [["a", "bb", "ccc"], ["dddd", "eeeee"]]  # a full batch at once, the rest after the window
    for text, (vector, share) in zip(["a", "bb", "ccc", "dddd", "eeeee"], answers, strict=True):
        assert np.frombuffer(vector, dtype="<f4").tolist() == [len(text)] * 4
        assert share == len(text)
    await batcher.close()
    assert delivered == [3, 2]


async def test_batcher_keeps_different_parameters_apart() -> None:
    sent: list[int] = []

    async def send(spec: ModelSpec, params: Params, items: list[Item], deadline: float) -> Result:
        sent.append(params.dimension)
        return Result(np.zeros((len(items), params.dimension), dtype=np.float32), 0)

    async def done(pendings: list[Pending], ok: bool) -> None:
        return None

    batcher = Batcher(Caller(send), Landing(done), window_s=0.0)
    loop = asyncio.get_running_loop()
    a = Pending("a", item("a"), loop.create_future(), 0.0, True)
    b = Pending("b", item("b"), loop.create_future(), 0.0, True)
    batcher.submit(SPEC, Params(4, False), [a])
    batcher.submit(SPEC, Params(2, True), [b])
    await asyncio.gather(a.future, b.future)
    assert sorted(sent) == [2, 4]


async def test_tick_batcher_makes_one_call_per_loop_turn() -> None:
    calls: list[list[str]] = []

    async def upper(keys: list[str]) -> list[str]:
        calls.append(keys)
        await asyncio.sleep(0)
        return [k.upper() for k in keys]

    batch = TickBatcher(upper)
    answers = await asyncio.gather(batch(["a", "b"]), batch([]), batch(["c"]), batch(["a"]))
    assert answers == [["A", "B"], [], ["C"], ["A"]]
    assert calls == [["a", "b", "c", "a"]]
    assert await batch(["d"]) == ["D"] and len(calls) == 2


async def test_tick_batcher_gives_every_caller_the_error() -> None:
    async def broken(keys: list[str]) -> list[str]:
        raise UpstreamFailed("down")

    batch = TickBatcher(broken)
    results = await asyncio.gather(batch(["a"]), batch(["b"]), return_exceptions=True)
    assert all(isinstance(r, UpstreamFailed) for r in results)


async def test_a_refused_shared_call_is_split_by_request() -> None:
    sent: list[list[str]] = []

    async def send(spec: ModelSpec, params: Params, items: list[Item], deadline: float) -> Result:
        texts = [it.parts["text"] for it in items]
        sent.append(texts)
        if "bad" in texts:
            raise UpstreamRejected("text too long", status=400)
        return Result(np.ones((len(items), 4), dtype=np.float32), billed_tokens=len(items))

    async def done(pendings: list[Pending], ok: bool) -> None:
        return None

    batcher = Batcher(Caller(send), Landing(done), window_s=0.0)
    loop = asyncio.get_running_loop()
    bad = Pending("bad", item("bad"), loop.create_future(), 0.0, True, owner=1)
    good = [Pending(t, item(t), loop.create_future(), 0.0, True, owner=2) for t in ("g1", "g2")]
    batcher.submit(SPEC, Params(4, False), [bad, *good])
    results = await asyncio.gather(bad.future, *(p.future for p in good), return_exceptions=True)
    assert isinstance(results[0], UpstreamRejected)
    assert [share for _, share in results[1:]] == [1, 1]
    assert sorted(map(sorted, sent)) == [["bad"], ["bad", "g1", "g2"], ["g1", "g2"]]
