"""Every metric in one place, on an injected registry.

Names carry the `gateway_` prefix and base units. Label values come only from configuration (catalog
model names, upstream names, team names); anything else is reported as `other`, so clients cannot grow
the number of series.

With several worker processes (`serve --workers N`) prometheus-client runs in multiprocess mode: the CLI
sets PROMETHEUS_MULTIPROC_DIR before this module is imported, every worker writes its values to files in
that directory, and `exposition()` merges the files of all workers (gauges by their `multiprocess_mode`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .metricfiles import forget_dead_workers
from .runtime.later import Later
from .runtime.looplag import lag_histogram
from .runtime.memo import MemoGauges
from .runtime.tally import Tally
from .usage.metrics import UsageMetrics

OTHER = "other"
CONNECTION_CLOSES = ("head_timeout", "body_timeout", "slow_body", "write_timeout", "evicted_slow", "evicted", "refused")
FETCH_OUTCOMES = ("ok", "refused", "too_large", "timeout", "unreachable", "aborted")
ANONYMOUS = "anonymous"
# The limits a team can hit; their rejection counters exist (at 0) from the start for every known team.
LIMITS = ("requests", "tokens")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
MEMO_HELP = "%s held by a memo: 'texts' (texts' items), 'keys', 'skeletons' (answers' JSON); most of a live worker"
FAILOVER_REASONS = ("throttled", "failed", "timeout", "circuit_open", "invalid_answer")


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        models: Iterable[str] = (),
        upstreams: Iterable[str] = (),
        teams: Iterable[str] = (),
        multiprocess_dir: str | None = None,
    ) -> None:
        self.registry = registry
        self.multiprocess_dir = multiprocess_dir
        self.openmetrics = False  # whether /metrics may answer OpenMetrics (set when traces are on: exemplars)
        self._models = frozenset(models)
        self._upstreams = frozenset(upstreams)
        self._teams = frozenset(teams)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        # The hot path's updates: applied once per loop turn with several workers, else when /metrics is read
        self.tally = Tally(per_turn=multiprocess_dir is not None)
        self.later = Later()  # bookkeeping run after an answer is written (runtime/later.py): before a scrape too
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
            "Items answered, by model, modality and cache result (hit, miss, coalesced)",
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
        self.cache_invalid = Counter(
            "gateway_cache_invalid_total",
            "Cached values refused as misses (then fetched again and overwritten), by reason: length (not the "
            "model's dimension), non_finite (NaN or infinity)",
            ["reason"],
            registry=r,
        )
        for reason in ("length", "non_finite"):
            self.cache_invalid.labels(reason)
        self.redis_errors = Counter(
            "gateway_redis_errors_total",
            "Redis operations that failed or timed out: cache read, write, lease (claim, check, release)",
            ["op"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "gateway_breaker_open",
            "1 while a circuit breaker is open",
            ["target"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.redis_shared = Gauge(
            "gateway_redis_shared",
            "1 while the cache (target 'redis cache') or the limits ('redis limits') are shared through Redis; "
            "0 while this process caches or decides alone",
            ["target"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.limits_processes = Gauge(
            "gateway_limits_processes",
            "Live gateway processes sharing the limits, as counted by heartbeats in Redis",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Calls to upstreams, by upstream, model and the upstream's HTTP status (timeout, error: no answer)",
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
        self.upstream_failovers = Counter(
            "gateway_upstream_failovers_total",
            "Calls moved from a model's deployment to another, by reason",
            ["model", "deployment", "reason"],
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
        self.usage = UsageMetrics(r)  # money billed and saved, budgets (app/usage/metrics.py)
        self.media_fetches = Counter(
            "gateway_media_fetches_total",
            "Image URLs fetched by the gateway (media_fetch), by outcome "
            "(ok, refused, too_large, timeout, unreachable, aborted)",
            ["outcome"],
            registry=r,
        )
        for outcome in FETCH_OUTCOMES:
            self.media_fetches.labels(outcome)  # the series exist (at 0) while media_fetch is off
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections_total", "Requests refused by a rate limit", ["team", "limit"], registry=r
        )
        self.connections_closed = Counter(
            "gateway_connections_closed_total",
            "Client connections closed by the server layer: head_timeout, body_timeout, slow_body (below the "
            "minimum body rate), write_timeout (an answer not taken), evicted_slow and evicted (at the "
            "connection cap: a slow request, an idle connection), refused (at the cap, none evictable)",
            ["reason"],
            registry=r,
        )
        self.memory_waits = Counter(
            "gateway_memory_budget_total",
            "Requests (budget=requests) and upstream calls (budget=calls) that waited for their memory budget, were "
            "refused (503), or found their team's share full (over_share: 429)",
            ["budget", "outcome"],
            registry=r,
        )
        self.memo_bytes, self.memo_entries = (  # what the bounded memos hold (runtime/memo.py), on insert
            Gauge(
                f"gateway_memo_{unit}", MEMO_HELP % unit.capitalize(), ["memo"], multiprocess_mode="livemax", registry=r
            )
            for unit in ("bytes", "entries")
        )
        for reason in CONNECTION_CLOSES:
            self.connections_closed.labels(reason)
        for budget, outcome in itertools.product(("requests", "calls"), ("waited", "refused", "over_share")):
            self.memory_waits.labels(budget, outcome)
        self.loop_lag = lag_histogram(r)  # how late the event loop runs what is due (runtime/looplag.py)
        self._routes: list[str] = []
        self._init_teams(self.known_teams())

    # Series that alerts and ratios divide by exist at 0 from the start: rate() cannot see the increase
    # of a series' first sample, so a burst of errors right after a start would otherwise go unnoticed.

    def init_routes(self, routes: Iterable[str]) -> None:
        self._routes = list(routes)
        self._init_teams(self.known_teams())

    def _init_teams(self, teams: Iterable[str]) -> None:
        for team in teams:
            for limit in LIMITS:
                self.ratelimit_rejections.labels(team, limit)
            for route in self._routes:
                for status_class in ("2xx", "4xx", "5xx"):
                    self.requests.labels(route, status_class, team)

    def add_teams(self, names: Iterable[str]) -> None:
        """Teams added by a reload get their own label value (and series at 0); removed ones keep theirs."""
        new = set(names) - self._teams
        self._teams = self._teams | new
        self._init_teams(sorted(new))

    def init_model(self, upstreams: Iterable[str], model: str, modalities: Iterable[str]) -> None:
        """The series of a model's deployments (`upstreams`) exist, at 0, from the start."""
        for upstream in upstreams:
            for status in ("200", "429"):
                self.upstream_requests.labels(self.upstream(upstream), self.model(model), status)
            for reason in FAILOVER_REASONS:
                self.upstream_failovers.labels(self.model(model), self.upstream(upstream), reason)
        for modality in modalities:
            for cache in ("hit", "miss"):
                self.items.labels(self.model(model), modality, cache)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once per series (labels() costs microseconds, and the hot path
        touches several series per request). Bounded: label values come from configuration (see above)."""
        key = (metric, values)
        series = self._children.get(key)
        if series is None:
            series = self._children[key] = metric.labels(*values)
        return series

    def memo(self, name: str) -> MemoGauges:
        """Where the memo `name` reports what it holds (its series exist, at 0, from here on)."""
        return MemoGauges(self.tally, self.memo_bytes.labels(name), self.memo_entries.labels(name))

    def known_teams(self) -> list[str]:
        return [*sorted(self._teams), ANONYMOUS]

    def exposition(self) -> bytes:
        """The text format of every metric: this process's registry, or all workers' files merged."""
        self.later.run()
        self.tally.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        forget_dead_workers(self.multiprocess_dir)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def negotiate(self, accept: str) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics (the only format with exemplars) when traces are on
        and the scraper asks for it (Prometheus does; exemplars only in one process), else the text format."""
        if not self.openmetrics or "application/openmetrics-text" not in accept or self.multiprocess_dir:
            return self.exposition(), CONTENT_TYPE_LATEST
        encoder, content_type = choose_encoder(accept)
        self.later.run()
        self.tally.flush()
        return encoder(self.registry), content_type

    def model(self, name: str) -> str:
        return name if name in self._models else OTHER

    def upstream(self, name: str) -> str:
        return name if name in self._upstreams else OTHER

    def team(self, name: str | None) -> str:
        if name is None:
            return ANONYMOUS
        return name if name in self._teams else OTHER
