"""Fleet (routing, failover, retries, poison answers) as a plain unit: scripted upstreams, a scripted quota
gate, an injected clock and sleep. The end-to-end behaviour is in test_deployments_e2e and test_poison_e2e."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.config.catalog import ModelSpec
from app.errors import (
    GatewayError,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamInvalid,
    UpstreamRejected,
    UpstreamTimeout,
)
from app.inputs.items import Item
from app.inputs.params import Params
from app.metrics import Metrics
from app.upstreams.adapter import Batch, Result
from app.upstreams.breaker import CircuitBreaker
from app.upstreams.deployment import Deployment
from app.upstreams.fleet import Fleet
from app.upstreams.guard import Guard, RetryPolicy
from tests.support.faketime import FakeTime

SPEC = ModelSpec(
    name="m",
    upstream_model="m",
    default_dimension=4,
    dimensions=(4,),
    deployments=[{"upstream": "a"}, {"upstream": "b"}],
)
PARAMS = Params(4, True)


class Scripted:
    """An upstream answering from a script of outcomes (the last one repeats)."""

    kind = "openai"

    def __init__(self, name: str, *outcomes: GatewayError | str, took: float = 0.0, t: FakeTime | None = None):
        self.name = name
        self.outcomes = outcomes or ("ok",)
        self.calls = 0
        self.took, self.t = took, t

    async def embed(self, batch: Batch) -> Result:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if self.t is not None:
            self.t.now += self.took
        if isinstance(outcome, GatewayError):
            raise outcome
        return Result(np.zeros((len(batch.items), 4), dtype="<f4"), 1)

    async def close(self) -> None:
        return None


class Gate:
    """Quota gate: `waits[account]` is how long until that account's next slot (0: now)."""

    def __init__(self, waits: dict[str, float] | None = None) -> None:
        self.waits = waits or {}
        self.taken: list[tuple[str, bool]] = []

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> float | None:
        left = self.waits.get(account, 0.0)
        if left > 0 and not wait:
            return left
        self.taken.append((account, wait))
        return None


def deployment(
    t: FakeTime,
    upstream: Scripted,
    *,
    weight: float = 1.0,
    identity: str = "",
    paced: bool = False,
    failures: int = 3,
    attempts: int = 6,
) -> Deployment:
    breaker = CircuitBreaker(upstream.name, failures=failures, open_s=10.0, clock=t.clock)
    guard = Guard(breaker, RetryPolicy(attempts, 0.1, 1.0), concurrency=4)
    rpm = 60 if paced else None
    return Deployment(
        upstream.name, upstream, guard, identity or upstream.name, f"{upstream.name}:m", rpm, None, weight
    )


def fleet(t: FakeTime, *deployments: Deployment, gate: Gate | None = None) -> Fleet:
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=[d.name for d in deployments])
    f = Fleet(
        {d.name: d.upstream for d in deployments},
        {d.name: d.guard for d in deployments},
        metrics,
        gate or Gate(),
        clock=t.clock,
        sleep=t.sleep,
        rng=random.Random(7),
    )
    f.models["m"] = list(deployments)
    return f


def items(n: int = 2) -> list[Item]:
    return [Item("text", {"text": f"t{i}"}, f"t{i}".encode(), 2) for i in range(n)]


def limited(after: float | None) -> RateLimited:
    err = RateLimited("slow down", retry_after=after or 1.0)
    err.upstream_retry_after = after
    return err


async def call(f: Fleet, t: FakeTime, identity: str = "a", deadline_s: float = 30.0) -> Result:
    return await f.call(Batch(SPEC, Params(4, True, identity=identity), items()), t.now + deadline_s)


@pytest.mark.parametrize("trouble", [limited(5.0), UpstreamFailed("500"), UpstreamTimeout("slow")])
async def test_fails_over_to_the_other_deployment_at_once(trouble: GatewayError) -> None:
    t = FakeTime()
    a, b = Scripted("a", trouble), Scripted("b")
    result = await call(fleet(t, deployment(t, a), deployment(t, b)), t)
    assert (a.calls, b.calls) == (1, 1) and t.slept == [] and result.identity == "b"


async def test_a_throttled_deployment_ranks_last_until_its_retry_after() -> None:
    t = FakeTime()
    a, b = Scripted("a", limited(5.0), "ok"), Scripted("b")
    f = fleet(t, deployment(t, a), deployment(t, b))
    await call(f, t)
    for _ in range(10):
        await call(f, t)
    assert a.calls == 1 and b.calls == 11
    t.now += 6
    for _ in range(20):
        await call(f, t)
    assert a.calls > 1


async def test_an_open_breaker_is_skipped_without_an_attempt() -> None:
    t = FakeTime()
    a, b = Scripted("a", UpstreamFailed("down")), Scripted("b")
    da = deployment(t, a, failures=1)
    f = fleet(t, da, deployment(t, b))
    await call(f, t)
    assert da.guard.breaker.state == "open"
    for _ in range(5):
        await call(f, t, identity="a")
    assert a.calls == 1 and b.calls == 6


async def test_every_deployment_failing_retries_in_rounds_with_backoff() -> None:
    t = FakeTime()
    a, b = Scripted("a", UpstreamFailed("1"), UpstreamFailed("2"), "ok"), Scripted("b", UpstreamFailed("x"))
    result = await call(fleet(t, deployment(t, a, failures=9), deployment(t, b, failures=9)), t)
    assert result.identity == "a" and a.calls == 3 and b.calls == 2 and len(t.slept) == 2


async def test_single_deployment_keeps_the_retry_policy() -> None:
    t = FakeTime()
    a = Scripted("a", UpstreamFailed("500"), UpstreamTimeout("slow"), limited(0.7), "ok")
    await call(fleet(t, deployment(t, a, failures=9)), t)
    assert a.calls == 4 and len(t.slept) == 3 and t.slept[2] == 0.7


async def test_attempts_are_bounded_and_the_deadline_is_kept() -> None:
    t = FakeTime()
    a = Scripted("a", UpstreamFailed("500"))
    with pytest.raises(UpstreamFailed):
        await call(fleet(t, deployment(t, a, failures=99, attempts=4)), t)
    assert a.calls == 4
    t2 = FakeTime()
    b = Scripted("b", limited(5.0))
    with pytest.raises(RateLimited):
        await call(fleet(t2, deployment(t2, b)), t2, identity="b", deadline_s=3.0)
    assert b.calls == 1 and t2.slept == []  # a Retry-After past the deadline: the error at once


@pytest.mark.parametrize("defect", ["wrong length", "non-finite", "not JSON"])
async def test_a_poison_answer_is_never_retried_on_its_deployment(defect: str) -> None:
    t = FakeTime()
    a = Scripted("a", UpstreamInvalid(f"upstream a answered {defect}"))
    da = deployment(t, a, failures=1)
    with pytest.raises(UpstreamInvalid, match=defect):
        await call(fleet(t, da), t)
    assert a.calls == 1 and da.guard.breaker.state == "closed"  # not a failure of the upstream
    b = Scripted("b")
    a.calls = 0
    result = await call(fleet(t, deployment(t, a), deployment(t, b)), t)
    assert a.calls <= 1 and b.calls == 1 and result.identity == "b"


async def test_a_refused_request_is_not_tried_elsewhere() -> None:
    t = FakeTime()
    a, b = Scripted("a", UpstreamRejected("too long", status=400)), Scripted("b", UpstreamRejected("x", status=400))
    with pytest.raises(UpstreamRejected):
        await call(fleet(t, deployment(t, a), deployment(t, b)), t)
    assert a.calls + b.calls == 1


async def test_every_breaker_open_answers_503_at_once() -> None:
    t = FakeTime()
    da, db = deployment(t, Scripted("a")), deployment(t, Scripted("b"))
    for d in (da, db):
        d.guard.breaker.failed(False)
        d.guard.breaker.failed(False)
        d.guard.breaker.failed(False)
    with pytest.raises(Unavailable):
        await call(fleet(t, da, db), t)
    assert t.slept == []


async def test_the_batch_identity_goes_first() -> None:
    t = FakeTime()
    a, b = Scripted("a"), Scripted("b")
    f = fleet(t, deployment(t, a), deployment(t, b))
    for _ in range(10):
        assert (await call(f, t, identity="b")).identity == "b"
    assert (a.calls, b.calls) == (0, 10)


async def test_quota_headroom_decides_and_the_soonest_slot_waits() -> None:
    t = FakeTime()
    a, b = Scripted("a"), Scripted("b")
    gate = Gate({"a:m": 2.0})
    f = fleet(t, deployment(t, a, paced=True), deployment(t, b, paced=True), gate=gate)
    for _ in range(5):
        await call(f, t, identity="a")
    assert (a.calls, b.calls) == (0, 5)  # a has no slot now: b, which has, takes the calls
    gate.waits = {"a:m": 2.0, "b:m": 0.5}
    await call(f, t, identity="a")
    assert b.calls == 6 and gate.taken[-1] == ("b:m", True)  # neither has one now: the sooner waits


async def test_light_traffic_spreads_by_weight() -> None:
    t = FakeTime()
    a, b = Scripted("a"), Scripted("b")
    f = fleet(t, deployment(t, a, weight=3, identity="same"), deployment(t, b, weight=1, identity="same"))
    for _ in range(400):
        await call(f, t, identity="same")
    assert 2.2 <= a.calls / b.calls <= 4.0, (a.calls, b.calls)


def test_identity_follows_the_ranking_only_when_identities_differ() -> None:
    t = FakeTime()
    same = fleet(t, deployment(t, Scripted("a"), identity="g"), deployment(t, Scripted("b"), identity="g"))
    assert {same.identity(SPEC) for _ in range(20)} == {"g"}
    differ = fleet(t, deployment(t, Scripted("a")), deployment(t, Scripted("b")))
    assert Counter(differ.identity(SPEC) for _ in range(200)).keys() == {"a", "b"}
