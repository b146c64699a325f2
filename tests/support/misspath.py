"""The request path as create_app wires it (service -> team limits, cache, flights -> upstream caller -> guard
-> adapter), over given adapters and this process's limits, for the unit tests of the service and its
metrics."""

from __future__ import annotations

from app.cache.lru import MemoryCache
from app.cache.store import VectorCache
from app.config.settings import Settings
from app.flights.wiring import open_flights
from app.limits.admission import TeamLimiter
from app.limits.quota import UpstreamQuota
from app.metrics import Metrics
from app.runtime.budget import MemoryBudget
from app.service import EmbeddingService
from app.upstreams.adapter import Upstream
from app.upstreams.breaker import CircuitBreaker
from app.upstreams.caller import OpenGate, QuotaGate
from app.upstreams.fleet import Fleet
from app.upstreams.guard import Guard, RetryPolicy
from app.wiring.parts import flight_times
from app.wiring.stores import limits_on


def miss_path(
    adapters: dict[str, Upstream],
    metrics: Metrics,
    *,
    cache: VectorCache | None = None,
    concurrency: int = 8,
    gate: QuotaGate | None = None,
    call_values: dict[str, int] | None = None,
    memory: MemoryBudget | None = None,
) -> EmbeddingService:
    """One attempt per call (no retries: a failure is the test's to see at once), `concurrency` calls in
    flight per upstream, `call_values` vector values a call at most by upstream, `memory` the budget a call's
    answer takes room from (batcher.py)."""
    cache = cache or MemoryCache(1 << 20)
    guards = {
        name: Guard(
            CircuitBreaker(name, failures=10, open_s=5.0, metrics=metrics),
            RetryPolicy(attempts=1, base_s=0.05, cap_s=2.0),
            concurrency=concurrency,
        )
        for name in adapters
    }
    s = Settings()
    limits = limits_on(None, s, metrics)
    quota = UpstreamQuota(limits, metrics, window_s=s.limits_window_s, slack_s=0.0, max_wait_s=s.upstream_queue_s)
    caller = Fleet(adapters, guards, metrics, gate or OpenGate())
    flights = open_flights(cache, caller, flight_times(s), metrics, call_values=call_values, memory=memory)
    teams = TeamLimiter(limits, metrics, window_s=s.limits_window_s)
    return EmbeddingService(
        cache, flights, metrics, teams, quota, namespace="t", deadline_s=30.0, route=caller.identity
    )
