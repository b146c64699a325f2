"""Fleet: the deployments of every model, and the one upstream caller the flights use.

A model lists one or more deployments (catalog.DeploymentSpec: an upstream, its own rpm/tpm, a weight,
an optional cache group). Each deployment has its own quota pacing (the account `upstream:upstream_model`
in limits/quota.py), the breaker and in-flight bound of its upstream (guard.py) and its metrics.

Routing (`Fleet.call`): the deployments are ranked, healthy ones first (breaker not open, not throttled
lately), among those by weight / (1 + calls in flight), drawn at random in that proportion so that light
traffic spreads too. The first ranked deployment whose quota has a slot now gets the call; when none has,
the one whose slot comes soonest gets it (and the call waits for its slot, within `upstream_queue_s`).
An answer of 429, 5xx, a timeout, a connection failure or an open breaker moves the call to the next
deployment at once; when every deployment has failed this round, the retry policy waits (backoff or
Retry-After) and starts another round, all within the request's deadline and its attempts.

A poison answer (an answer that breaks the contract: wrong count, duplicate index, wrong length, NaN,
invalid JSON, an error body with status 200, an answer past the size cap) is logged with what was wrong
and never retried on the deployment that gave it (another deployment may be tried); it does not count
as a failure of the upstream, so the breaker of that upstream, shared by its other models, stays closed.

Cache identity (`Fleet.identity`): vectors are cached under the identity of the deployment that computed
them: its cache group when the operator declared one (deployments in one group serve the same vectors,
docs/deployments.md), else its upstream's kind, base URL and workspace (or model path). A request's cache
read uses the identity of the deployment it is routed to; an answer from a deployment of another identity
(after a failover) is served but not cached under the first one's keys.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from ..config.catalog import ModelSpec
from ..errors import GatewayError, RateLimited, Unavailable, UpstreamFailed, UpstreamInvalid, UpstreamTimeout
from ..limits.quota import account
from ..metrics import Metrics
from .adapter import Batch, Result, Upstream
from .caller import QuotaGate, upstream_status
from .deployment import Deployment
from .guard import Guard, misconfigured, retryable
from .idle import admit_idle

log = logging.getLogger("embedding_gateway.fleet")
THROTTLED_S = 1.0  # a deployment that answered 429 without Retry-After ranks last this long


@dataclass(slots=True)
class _Round:
    """One call's state across its attempts."""

    tried: set[str]
    excluded: set[str]
    attempts: int = 0
    rounds: int = 0
    last: GatewayError | None = None
    retry: GatewayError | None = None  # the last error worth another round (429, 5xx, timeout, reset)


class Fleet:
    """The UpstreamCaller of the gateway (caller.py): `adapters` and `guards` by upstream name; a model's
    deployments are built from its spec on first use."""

    def __init__(
        self,
        adapters: dict[str, Upstream],
        guards: dict[str, Guard],
        metrics: Metrics,
        gate: QuotaGate,
        *,
        identities: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        missing = sorted(set(adapters) - set(guards))
        if missing:
            raise ValueError(f"no guard for upstream(s) {', '.join(missing)}")
        self.adapters = adapters
        self.guards = guards
        self.metrics = metrics
        self.gate = gate
        self.identities = identities or {}
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.models: dict[str, list[Deployment]] = {}

    def deployments(self, spec: ModelSpec) -> list[Deployment]:
        found = self.models.get(spec.name)
        if found is None:
            found = self.models[spec.name] = [
                Deployment(
                    d.upstream,
                    self.adapters[d.upstream],
                    self.guards[d.upstream],
                    f"group {d.cache_group}" if d.cache_group else self.identities.get(d.upstream, d.upstream),
                    account(d.upstream, spec.upstream_model),
                    d.rpm,
                    d.tpm,
                    d.weight,
                )
                for d in spec.deployments
                if d.upstream in self.adapters
            ]
        return found

    def ranked(self, spec: ModelSpec, skip: set[str] | frozenset[str] = frozenset()) -> list[Deployment]:
        """Healthy deployments first, drawn by weight / (1 + in flight); then the others, soonest back first."""
        now = self.clock()
        fit: list[Deployment] = []
        unfit: list[Deployment] = []
        for d in self.deployments(spec):
            if d.name not in skip:
                (fit if _healthy(d, now) else unfit).append(d)
        unfit.sort(key=lambda d: (d.guard.breaker.refusing(), d.throttled_until))
        return self._draw(fit) + unfit

    def _draw(self, pool: list[Deployment]) -> list[Deployment]:
        out: list[Deployment] = []
        while len(pool) > 1:
            weights = [d.weight / (1 + d.inflight) for d in pool]
            out.append(pool.pop(self.rng.choices(range(len(pool)), weights)[0]))
        return out + pool

    def identity(self, spec: ModelSpec) -> str:
        """The cache identity a request for `spec` reads under: that of the deployment it would go to."""
        deployments = self.deployments(spec)
        if not deployments:
            raise Unavailable(f"model {spec.name} has no upstream configured")
        if len(deployments) == 1 or len({d.identity for d in deployments}) == 1:
            return deployments[0].identity
        return self.ranked(spec)[0].identity

    async def call(self, batch: Batch, deadline: float) -> Result:
        """One upstream call for a micro-batch: deployments of the batch's identity first, failover to the
        others; new rounds (the retry policy) within the deadline and the policy's attempts."""
        spec, identity = batch.spec, batch.params.identity
        tokens = sum(it.est_tokens for it in batch.items)
        state = _Round(set(), set())
        while True:
            if deadline - self.clock() <= 0:
                raise state.last or UpstreamTimeout(f"the upstream of {spec.name} did not answer within the deadline")
            order = self._order(spec, identity, state)
            if not order:
                raise state.last or Unavailable(f"model {spec.name} has no upstream configured")
            if batch.params.background:
                d = await admit_idle(self.gate, order, tokens, deadline, self.clock, self.sleep, self.rng)
            else:
                d = await self._admit(order, tokens, batch.owner)
            result = await self._try(d, batch, deadline, state, others=len(order) - 1)
            if result is not None:
                return replace(result, identity=d.identity)
            if state.attempts >= d.guard.policy.attempts:
                raise state.last or UpstreamFailed(f"the upstream of {spec.name} failed")
            if not self._order(spec, identity, state):
                await self._next_round(spec, d, state, deadline)

    def _order(self, spec: ModelSpec, identity: str, state: _Round) -> list[Deployment]:
        """Healthy before unhealthy; within each, the batch's identity (whose cache it will fill) first."""
        ranked, now = self.ranked(spec, skip=state.tried | state.excluded), self.clock()
        return sorted(ranked, key=lambda d: (not _healthy(d, now), d.identity != identity))

    async def _admit(self, order: list[Deployment], tokens: int, owner: int) -> Deployment:
        """The first deployment whose quota has a slot now; else the one whose slot comes soonest (waited for)."""
        if len(order) == 1:  # nowhere else to go: wait for its slot (one quota decision)
            d = order[0]
            if not d.guard.breaker.refusing():
                await self.gate.try_admit(d.account, d.rpm, d.tpm, tokens, wait=True, owner=owner)
            return d
        soonest: tuple[float, Deployment] | None = None
        for d in order:
            if d.guard.breaker.refusing():
                continue
            wait = await self.gate.try_admit(d.account, d.rpm, d.tpm, tokens, wait=False)
            if wait is None:
                return d
            d.throttled_until = max(d.throttled_until, self.clock() + min(wait, THROTTLED_S))
            if soonest is None or wait < soonest[0]:
                soonest = wait, d
        if soonest is None:  # every breaker open: the first one answers (503 at once)
            return order[0]
        d = soonest[1]
        await self.gate.try_admit(d.account, d.rpm, d.tpm, tokens, wait=True, owner=owner)
        return d

    async def _try(self, d: Deployment, batch: Batch, deadline: float, state: _Round, *, others: int) -> Result | None:
        """One attempt on `d`; None when it failed (recorded in `state`)."""
        remaining = deadline - self.clock()
        budget = remaining / 2 if others else remaining  # leave time to fail over to the others
        d.inflight += 1
        try:
            outcome = await d.guard.attempt(lambda: self._send(d, batch), budget, batch.owner)
        except Unavailable as exc:  # its breaker is open: not an attempt; the next deployment
            state.tried.add(d.name)
            state.last = exc
            self._failover(batch.spec, d, "circuit_open")
            return None
        finally:
            d.inflight -= 1
        if not isinstance(outcome, GatewayError):
            return outcome
        state.attempts += 1
        state.last = outcome
        if isinstance(outcome, UpstreamInvalid) or misconfigured(outcome):
            state.excluded.add(d.name)  # never again for this call; another deployment may serve it
            self._failover(batch.spec, d, "invalid_answer" if isinstance(outcome, UpstreamInvalid) else "failed")
            return None
        if not retryable(outcome):
            raise outcome  # the request itself is refused (4xx): no deployment would take it
        state.tried.add(d.name)
        state.retry = outcome
        if isinstance(outcome, RateLimited):
            hint = outcome.upstream_retry_after
            d.throttled_until = self.clock() + (hint if hint is not None else THROTTLED_S)
        self._failover(batch.spec, d, _reason(outcome))
        return None

    async def _send(self, d: Deployment, batch: Batch) -> Result:
        m = self.metrics
        up, model = m.upstream(d.name), m.model(batch.spec.name)
        m.child(m.upstream_batch, up, model).observe(len(batch.items))
        t0 = time.perf_counter()
        try:
            result = await d.upstream.embed(batch)
        except GatewayError as exc:
            m.child(m.upstream_requests, up, model, upstream_status(exc)).inc()
            m.child(m.upstream_errors, up, model, type(exc).__name__).inc()
            if isinstance(exc, UpstreamInvalid):
                log.warning("upstream %s broke its contract for model %s: %s", d.name, model, exc.message)
            elif misconfigured(exc):
                log.warning("upstream %s is misconfigured: %s", d.name, exc.message)
            raise
        finally:
            m.child(m.upstream_duration, up, model).observe(time.perf_counter() - t0)
        m.child(m.upstream_requests, up, model, "200").inc()
        return result

    async def _next_round(self, spec: ModelSpec, d: Deployment, state: _Round, deadline: float) -> None:
        """Every deployment failed this round: wait (Retry-After or backoff), then try them all again."""
        deployments = self.deployments(spec)
        probing = len(deployments) > 1 and any(x.guard.breaker.state == "half-open" for x in deployments)
        error = state.retry or (state.last if probing else None)  # worth waiting: a failure, or a probe out
        if not probing and all(x.guard.breaker.refusing() for x in deployments):  # every circuit open: 503 now
            raise deployments[0].guard.breaker.refusal()
        if error is None:
            assert state.last is not None
            raise state.last
        hint = error.upstream_retry_after
        delay = hint if hint is not None else d.guard.policy.backoff(state.rounds, self.rng)
        if self.clock() + delay >= deadline:
            raise error
        await self.sleep(delay)
        state.rounds += 1
        state.tried.clear()

    def _failover(self, spec: ModelSpec, d: Deployment, reason: str) -> None:
        if len(spec.deployments) > 1:
            m = self.metrics
            m.child(m.upstream_failovers, m.model(spec.name), m.upstream(d.name), reason).inc()

    def states(self) -> dict[str, tuple[str, str]]:
        """Per upstream: the adapter's state (`ready`, or `loading` while the local model loads) and its
        circuit (closed, open or half-open)."""
        return {
            name: (getattr(adapter, "state", "ready"), self.guards[name].breaker.state)
            for name, adapter in self.adapters.items()
        }


def _healthy(d: Deployment, now: float) -> bool:
    """Not throttled lately, and its circuit closed or ready for a probe (an open circuit whose time is up
    gets its probe from the next call routed to it, so a recovered deployment rejoins the rotation)."""
    return d.throttled_until <= now and not d.guard.breaker.refusing()


def _reason(exc: GatewayError) -> str:
    if isinstance(exc, RateLimited):
        return "throttled"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return "failed"
