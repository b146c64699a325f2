"""The flights put together from the settings, bottom up: the leases (Redis when the cache is Redis, else
this process alone), the in-flight table, the batcher over the injected upstream caller, the coalescer."""

from __future__ import annotations

from ..cache.hot import HotCache
from ..cache.redis import RedisCache
from ..cache.store import VectorCache
from ..config.settings import Settings
from ..metrics import Metrics
from ..service import Flights
from ..telemetry.pipeline import TracedCache, TracedFlights
from ..telemetry.tracing import Tracing
from ..telemetry.upstream import TracedCaller
from ..upstreams.caller import UpstreamCaller
from .batcher import Batcher
from .coalescer import Coalescer
from .inflight import InFlight
from .leases import Leases, LocalLeases, RedisLeases


def open_leases(cache: VectorCache, settings: Settings) -> Leases:
    redis = cache.inner if isinstance(cache, HotCache) else cache
    if isinstance(redis, RedisCache):
        return RedisLeases(redis.link, redis.breaker, settings.redis_timeout_s, redis.metrics)
    return LocalLeases()


def open_flights(
    cache: VectorCache, caller: UpstreamCaller, settings: Settings, metrics: Metrics, tracing: Tracing | None = None
) -> Flights:
    """The miss path below the service, built bottom up: the batcher sends chunks through `caller` and lands
    each call in the in-flight table; the coalescer sends only what no one is fetching yet. With `tracing`,
    the waits, upstream calls and cache writes are spans (app/telemetry/)."""
    leases = open_leases(cache, settings)
    writes = cache if tracing is None else TracedCache(cache, tracing)
    inflight = InFlight(writes, leases, metrics)
    caller = caller if tracing is None else TracedCaller(caller, tracing)
    batcher = Batcher(caller, inflight, window_s=settings.batch_window_ms / 1000)
    lease_s = settings.request_deadline_s + 1.0  # a lease outlives its holder's request by a second at most
    flights = Coalescer(
        batcher, inflight, cache, leases, wait_s=settings.coalesce_wait_s, lease_s=lease_s, metrics=metrics
    )
    return flights if tracing is None else TracedFlights(flights, tracing)
