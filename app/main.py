"""create_app(settings) and its lifespan: the one place that builds the catalog, opens clients and wires
the parts together. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from . import errors
from .api import dashscope, docs, openai, ops
from .api.asgi import fastpath, headerlimit, observe
from .api.asgi.drain import CloseWhenDraining, Drain
from .api.asgi.front import Fronted
from .cache.hot import HotCache
from .cache.lru import MemoryCache
from .cache.redis import RedisCache
from .cache.store import VectorCache
from .config import masking
from .config.catalog import Catalog, build_catalog
from .config.settings import Settings, UpstreamConfig
from .flights.wiring import open_flights
from .inputs import tokentext
from .inputs.media.fetcher import open_fetcher
from .limits.admission import TeamLimiter
from .limits.census import Census
from .limits.failover import Limits
from .limits.local import LocalStore
from .limits.quota import UpstreamQuota
from .limits.shared import RedisStore
from .metrics import Metrics, multiprocess_dir
from .redis.bypass import Bypass
from .redis.link import open_link
from .runtime.state import Gateway
from .server.connections import for_worker
from .server.protocol import STATE_KEY
from .service import EmbeddingService
from .teams.keys import Authenticator
from .teams.reload import watch_teams
from .teams.team import Team, teams_from, unknown_models
from .telemetry import config as trace_config
from .telemetry.incoming import TraceRequests
from .telemetry.pipeline import TracedCache, traced_limiter
from .telemetry.tracing import Tracing
from .telemetry.upstream import TracedPoster, TracedUpstream
from .upstreams import local
from .upstreams.adapter import Upstream
from .upstreams.breaker import CircuitBreaker
from .upstreams.dashscope import DashScopeUpstream
from .upstreams.fleet import Fleet
from .upstreams.guard import Guard, RetryPolicy
from .upstreams.http import HttpClient, Poster
from .upstreams.local_model import LocalModelUnavailable
from .upstreams.openai import OpenAIUpstream

log = logging.getLogger("embedding_gateway")

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


def unavailable(name: str, cfg: UpstreamConfig, settings: Settings) -> str | None:
    """None when the upstream can serve (a key, a non-default base URL, a model installed), else what
    would enable it."""
    if cfg.kind == "dashscope":
        return None if cfg.key() else f"set {cfg.api_key_env or 'DASHSCOPE_API_KEY'}"
    if cfg.kind == "openai":
        if cfg.key() or cfg.base_url.rstrip("/") != DEFAULT_OPENAI_URL:
            return None
        return f"set {cfg.api_key_env or 'OPENAI_API_KEY'} or OPENAI_BASE_URL"
    if not settings.local_model:
        return "the local model is turned off (LOCAL_MODEL=false)"
    try:
        local.model_path(cfg.model_path)
    except LocalModelUnavailable as exc:
        return str(exc)
    return None


def open_upstream(name: str, cfg: UpstreamConfig, settings: Settings, tracing: Tracing | None = None) -> Upstream:
    """One upstream's adapter; with `tracing`, its attempts are spans and its HTTP calls carry `traceparent`."""
    upstream: Upstream
    if cfg.kind == "local":
        upstream = local.LocalUpstream(name, local.model_path(cfg.model_path), threads=settings.local_threads)
        upstream.start()
    else:
        http: Poster = HttpClient(
            name,
            max_connections=cfg.max_connections,
            keepalive_s=cfg.keepalive_s,
            connect_s=cfg.connect_timeout_s,
            read_s=cfg.timeout_s,
            max_bytes=cfg.max_response_bytes,
        )
        if tracing is not None:
            http = TracedPoster(http, tracing)
        if cfg.kind == "dashscope":
            upstream = DashScopeUpstream(name, http, cfg.base_url, cfg.key() or "", cfg.workspace)
        else:
            upstream = OpenAIUpstream(name, http, cfg.base_url, cfg.key())
    return upstream if tracing is None else TracedUpstream(upstream, tracing)


def open_guard(name: str, cfg: UpstreamConfig, settings: Settings, metrics: Metrics) -> Guard:
    """Breaker and retries for one upstream; at most `max_connections` of its calls in flight, so that
    calls wait here, within their deadline, rather than for a connection in the HTTP client's pool."""
    breaker = CircuitBreaker(name, failures=settings.breaker_failures, open_s=settings.breaker_open_s, metrics=metrics)
    policy = RetryPolicy(settings.retry_attempts, settings.retry_base_s, settings.retry_max_s)
    return Guard(breaker, policy, concurrency=cfg.max_connections)


async def open_cache(settings: Settings, metrics: Metrics) -> VectorCache:
    s = settings
    if s.redis_url is None:
        return MemoryCache(s.cache_local_max_bytes, metrics)
    link = await open_link(s.redis_url.get_secret_value(), "cache", timeout_s=s.redis_timeout_s,
                           max_connections=s.redis_max_connections, mode=s.redis_cluster)  # fmt: skip
    redis = RedisCache(link, ttl_s=s.cache_ttl_s, timeout_s=s.redis_timeout_s, retry_after_s=s.redis_retry_after_s,
                       metrics=metrics)  # fmt: skip
    return HotCache(redis, s.cache_hot_max_bytes) if s.cache_hot_max_bytes else redis


# Routes served past FastAPI's routing when they need nothing from it (see api/asgi/fastpath.py).
FAST_PATHS = (
    "/v1/embeddings",
    "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
    "/api/v1/services/embeddings/text-embedding/text-embedding",
)


async def open_limits(settings: Settings, metrics: Metrics) -> Limits:
    """Redis (limits_redis_url, else REDIS_URL) shared by every replica, or this process alone; limits that
    fall back to this process are divided by the number of live processes (heartbeats in Redis)."""
    s, url, shared, link = settings, settings.limits_url(), None, None
    if url is not None:
        link = await open_link(url, "limits", timeout_s=s.limits_timeout_s, max_connections=s.limits_max_connections,
                               mode=s.redis_cluster, wait_s=s.request_deadline_s)  # fmt: skip
        shared = RedisStore(link, namespace=s.cache_namespace, window_s=s.limits_window_s, lease_s=s.limits_lease_s,
                            timeout_s=s.limits_timeout_s, budget_s=s.request_deadline_s)  # fmt: skip
    census = Census(link, namespace=s.cache_namespace, floor=s.replicas * s.workers,
                    interval_s=s.limits_heartbeat_s, metrics=metrics)  # fmt: skip
    local = LocalStore(window_s=s.limits_window_s, lease_s=s.limits_lease_s)
    bypass = Bypass("redis limits", s.limits_retry_after_s, metrics)
    return Limits(shared, local, census=census, policy=s.limits_on_redis_failure, breaker=bypass)


@dataclass(frozen=True, slots=True)
class Plan:
    """What create_app decides without any I/O: the catalog, the teams, the metrics and auth."""

    settings: Settings
    configs: dict[str, UpstreamConfig]
    catalog: Catalog
    teams: dict[str, Team]
    metrics: Metrics
    auth: Authenticator
    tracing: Tracing | None  # traces on (the standard OTEL_* variables, app/telemetry/config.py)


def plan(settings: Settings) -> Plan:
    masking.install(masking.Masker.from_settings(settings))  # every secret masked in errors and logs
    configs = settings.upstream_configs()
    available = {name: unavailable(name, cfg, settings) for name, cfg in configs.items()}
    catalog = build_catalog(settings, available)
    for name, reason in available.items():
        if reason and configs[name].kind == "local" and settings.local_model:
            log.warning("local model not served: %s", reason)
    teams = teams_from(settings)
    traces = trace_config.from_env(os.environ)
    metrics = Metrics(
        CollectorRegistry(), models=catalog.names(), upstreams=configs, teams=teams, multiprocess_dir=multiprocess_dir()
    )
    metrics.openmetrics = traces is not None  # /metrics answers OpenMetrics when asked: the exemplars' format
    for spec in catalog:
        metrics.init_model([d.upstream for d in spec.deployments], spec.name, spec.modalities)
    keys = {name: cfg.keys for name, cfg in settings.teams.items()}
    auth = Authenticator(teams, keys, required=settings.gateway_auth == "required")
    return Plan(settings, configs, catalog, teams, metrics, auth, None if traces is None else Tracing(traces))


async def open_gateway(p: Plan, stack: AsyncExitStack) -> Gateway:
    """Everything the gateway opens, each close pushed on `stack` as soon as its part is open: they run in
    reverse order (the service finishes its upstream calls before the adapters and the cache close), and
    one close raising does not keep the others from running."""
    s, metrics, tracing = p.settings, p.metrics, p.tracing
    if tracing is not None:  # the export thread, in this worker; its queue sent last, after the upstream calls
        tracing.start()
        stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
    adapters: dict[str, Upstream] = {}
    for name in sorted({d.upstream for spec in p.catalog for d in spec.deployments}):
        adapters[name] = adapter = open_upstream(name, p.configs[name], s, tracing)
        stack.push_async_callback(adapter.close)
    cache = await open_cache(s, metrics)
    stack.push_async_callback(cache.close)
    limits = await open_limits(s, metrics)
    stack.push_async_callback(limits.close)
    await limits.start()
    quota = UpstreamQuota(
        limits, metrics, window_s=s.limits_window_s, slack_s=s.upstream_quota_slack_s, max_wait_s=s.upstream_queue_s
    )
    guards = {name: open_guard(name, p.configs[name], s, metrics) for name in adapters}
    identities = {name: p.configs[name].identity() for name in adapters}
    upstreams = Fleet(adapters, guards, metrics, quota, identities=identities)
    flights = open_flights(cache, upstreams, s, metrics, tracing)
    reads = cache if tracing is None else TracedCache(cache, tracing)
    service = EmbeddingService(
        reads, flights, metrics, namespace=s.cache_namespace, deadline_s=s.request_deadline_s, route=upstreams.identity
    )
    stack.push_async_callback(service.close)
    fetcher = open_fetcher(s, metrics)
    if fetcher is not None:
        stack.push_async_callback(fetcher.close)
    kinds: dict[str, str] = {name: cfg.kind for name, cfg in p.configs.items()}
    team_limits = TeamLimiter(limits, metrics, window_s=s.limits_window_s)
    if tracing is not None:
        team_limits = traced_limiter(team_limits, tracing)
    return Gateway(s, p.catalog, cache, service, upstreams, metrics, kinds, p.auth, team_limits, quota, fetcher=fetcher)


def announce(p: Plan, gw: Gateway) -> None:
    log.info(
        "serving %d models from %s; cache: %s; auth: %s, %d teams; limits: %s",
        len(p.catalog),
        ", ".join(sorted(gw.upstreams.adapters)) or "no upstream",
        gw.cache.name,
        p.settings.gateway_auth,
        len(p.teams),
        gw.limits.limits.backend,
    )
    for entry in unknown_models(p.settings, set(p.catalog.names())):
        log.warning("%s is not served here (unknown or disabled model)", entry)
    if not p.catalog.names():
        log.warning("no model is enabled: set DASHSCOPE_API_KEY or OPENAI_API_KEY, or install the local extra")


def lifespan_of(p: Plan) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, object]]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            connections = for_worker(p.settings, p.configs, p.catalog, p.metrics.connections_closed)
            stack.callback(connections.close)
            gw = app.state.gateway = await open_gateway(p, stack)
            drain = Drain(gw, p.settings.shutdown_drain_s)
            drain.install()
            stack.callback(drain.uninstall)
            reloader = watch_teams(p.settings, p.auth, p.metrics, set(p.catalog.names()))  # file changes, SIGHUP
            stack.push_async_callback(reloader.stop)
            warming = tokentext.warm_up(p.catalog)  # the token-id encoding, parsed in a thread: no request waits
            if warming is not None:
                stack.push_async_callback(lambda: warming)
            announce(p, gw)
            gc.collect()
            gc.freeze()  # what start-up made lives as long as the process: later collections skip it
            yield {STATE_KEY: connections}  # read by the HTTP protocol (app/server/protocol.py)

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    p = plan(settings or Settings())
    app = Fronted(
        title="embedding-gateway",
        version="0.1.0",
        description="Embeddings of text, images and video behind the OpenAI and DashScope wire formats.",
        lifespan=lifespan_of(p),
    )
    errors.install_handlers(app)
    app.include_router(openai.router)
    app.include_router(dashscope.router)
    app.include_router(dashscope.uploads)
    app.include_router(ops.router)
    docs.install(app, p.catalog.names())
    fast = fastpath.routes_of(app, FAST_PATHS)
    for path in sorted(set(FAST_PATHS) - set(fast)):
        log.warning("POST %s is served by FastAPI's routing, not the fast path (it declares dependencies)", path)
    app.add_front(fastpath.FastPath, routes=fast, handlers=app.exception_handlers)
    app.add_front(CloseWhenDraining)
    app.add_front(headerlimit.HeaderLimit, max_bytes=p.settings.max_header_bytes, max_count=p.settings.max_header_count)
    if p.tracing is not None:  # the request's span, inside Observe (which logs its trace id)
        app.add_front(TraceRequests, tracing=p.tracing)
    app.add_front(observe.Observe, metrics=p.metrics)  # outermost: ids, logs and counts every request
    return app
