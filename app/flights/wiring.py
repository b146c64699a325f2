"""The flights put together, bottom up: the leases (in the cache's Redis when it has one, else this process
alone), the in-flight table, the batcher over the injected upstream caller, the coalescer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..cache.store import VectorCache
from ..metrics import Metrics
from ..runtime.budget import MemoryBudget
from ..service import Flights
from ..telemetry.pipeline import TracedCache, TracedFlights
from ..telemetry.tracing import Tracing
from ..telemetry.upstream import TracedCaller
from ..upstreams.caller import UpstreamCaller
from .batcher import Batcher
from .coalescer import Coalescer
from .inflight import InFlight
from .leases import Leases, LocalLeases, RedisLeases


@dataclass(frozen=True, slots=True)
class FlightTimes:
    """The flights' times, in seconds: how long concurrent misses are gathered into one call, how long an
    identical miss in flight elsewhere is waited for, how long a lease lives, a lease command's timeout."""

    batch_window_s: float
    coalesce_wait_s: float
    lease_s: float
    redis_timeout_s: float


def open_leases(cache: VectorCache, timeout_s: float) -> Leases:
    """Beside the cache's vectors in its Redis (one slot: the claim checks the vector atomically; one bypass),
    or this process alone."""
    shared = cache.shared_redis()
    if shared is None:
        return LocalLeases()
    return RedisLeases(shared.link, shared.breaker, timeout_s, shared.metrics)


def open_flights(
    cache: VectorCache,
    caller: UpstreamCaller,
    times: FlightTimes,
    metrics: Metrics,
    tracing: Tracing | None = None,
    call_values: Mapping[str, int] | None = None,
    memory: MemoryBudget | None = None,
) -> Flights:
    """The miss path below the service, built bottom up: the batcher sends chunks through `caller` and lands
    each call in the in-flight table, of `call_values` vector values at most by upstream, its answer given room
    in `memory` while it is received (batcher.py); the
    coalescer sends only what no one is fetching yet. With `tracing`,
    the waits, upstream calls and cache writes are spans (app/telemetry/)."""
    leases = open_leases(cache, times.redis_timeout_s)
    writes = cache if tracing is None else TracedCache(cache, tracing)
    inflight = InFlight(writes, leases, metrics)
    caller = caller if tracing is None else TracedCaller(caller, tracing)
    batcher = Batcher(caller, inflight, window_s=times.batch_window_s, call_values=call_values, memory=memory)
    flights = Coalescer(batcher, inflight, leases, wait_s=times.coalesce_wait_s, lease_s=times.lease_s, metrics=metrics)
    return flights if tracing is None else TracedFlights(flights, tracing)
