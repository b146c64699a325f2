"""Every metric in one place, on an injected registry.

Names carry the `gateway_` prefix and base units. Label values come only from configuration (catalog
model names, upstream names, team names); anything else is reported as `other`, so clients cannot grow
the number of series.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER = "other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        models: Iterable[str] = (),
        upstreams: Iterable[str] = (),
        teams: Iterable[str] = (),
    ) -> None:
        self.registry = registry
        self._models = frozenset(models)
        self._upstreams = frozenset(upstreams)
        self._teams = frozenset(teams)
        r = registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered, by route, status class and team",
            ["route", "status_class", "team"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Request time minus time spent waiting on the upstream",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being served", multiprocess_mode="livesum", registry=r
        )
        self.items = Counter(
            "gateway_items_total",
            "Input items, by model, modality and cache result (hit, miss, coalesced)",
            ["model", "modality", "cache"],
            registry=r,
        )
        self.cache_duration = Histogram(
            "gateway_cache_operation_duration_seconds",
            "Cache read and write latency",
            ["backend", "op"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors_total", "Redis operations that failed or timed out", ["op"], registry=r
        )
        self.breaker_open = Gauge(
            "gateway_breaker_open", "1 while a circuit breaker is open", ["target"], multiprocess_mode="max", registry=r
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Calls to upstreams, by upstream, model and status",
            ["upstream", "model", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Upstream call latency",
            ["upstream", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failed upstream calls, by reason",
            ["upstream", "model", "reason"],
            registry=r,
        )
        self.upstream_batch = Histogram(
            "gateway_upstream_batch_size",
            "Items per upstream call",
            ["upstream", "model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tokens_billed = Counter(
            "gateway_upstream_tokens_total", "Tokens the upstream billed", ["team", "model"], registry=r
        )
        self.tokens_saved = Counter(
            "gateway_cache_saved_tokens_total",
            "Estimated tokens not billed thanks to the cache",
            ["team", "model"],
            registry=r,
        )
        self.media_fetches = Counter(
            "gateway_media_fetches_total",
            "Image URLs fetched by the gateway (media_fetch), by outcome "
            "(ok, refused, too_large, timeout, unreachable, aborted)",
            ["outcome"],
            registry=r,
        )
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections_total", "Requests refused by a rate limit", ["team", "limit"], registry=r
        )

    def model(self, name: str) -> str:
        return name if name in self._models else OTHER

    def upstream(self, name: str) -> str:
        return name if name in self._upstreams else OTHER

    def team(self, name: str | None) -> str:
        if name is None:
            return "anonymous"
        return name if name in self._teams else OTHER
