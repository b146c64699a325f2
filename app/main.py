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
from .api import dashscope, docs, headers, observe, openai, ops
from .cache import MemoryCache, RedisCache, VectorCache
from .catalog import build_catalog
from .fetcher import Fetcher, open_client
from .gateway import Gateway
from .metrics import Metrics
from .service import EmbeddingService
from .settings import Settings, UpstreamConfig
from .upstreams.base import Upstream
from .upstreams.dashscope import DashScopeUpstream
from .upstreams.openai import OpenAIUpstream

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
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
        limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections),
    )
    if cfg.kind == "dashscope":
        return DashScopeUpstream(name, client, cfg.base_url, cfg.key() or "", cfg.workspace)
    return OpenAIUpstream(name, client, cfg.base_url, cfg.key())


def open_cache(settings: Settings, metrics: Metrics) -> VectorCache:
    if settings.redis_url is None:
        return MemoryCache(settings.cache_local_max_bytes, metrics)
    return RedisCache.from_url(
        settings.redis_url.get_secret_value(),
        ttl_s=settings.cache_ttl_s,
        timeout_s=settings.redis_timeout_s,
        retry_after_s=settings.redis_retry_after_s,
        metrics=metrics,
    )


def open_fetcher(settings: Settings, metrics: Metrics) -> Fetcher | None:
    if not settings.media_fetch:
        return None
    return Fetcher(
        open_client(settings.media_fetch_concurrency),
        max_bytes=settings.media_fetch_max_bytes,
        timeout_s=settings.media_fetch_timeout_s,
        max_redirects=settings.media_fetch_max_redirects,
        allow_hosts=frozenset(settings.media_fetch_allow_hosts),
        concurrency=settings.media_fetch_concurrency,
        max_urls=settings.media_fetch_max_urls,
        max_total_bytes=settings.media_fetch_max_total_bytes,
        count=lambda outcome: metrics.media_fetches.labels(outcome).inc(),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
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
            cache, upstreams, metrics, namespace=settings.cache_namespace, concurrency=settings.upstream_concurrency
        )
        fetcher = open_fetcher(settings, metrics)
        app.state.gateway = Gateway(
            settings,
            catalog,
            cache,
            service,
            metrics,
            {name: cfg.kind for name, cfg in configs.items()},
            fetcher=fetcher,
        )
        log.info(
            "serving %d models from %s; cache: %s", len(catalog), ", ".join(sorted(used)) or "no upstream", cache.name
        )
        if not catalog.names():
            log.warning("no model is enabled: set DASHSCOPE_API_KEY or OPENAI_API_KEY, or install the local extra")
        try:
            yield
        finally:
            for upstream in upstreams.values():
                await upstream.close()
            await cache.close()
            if fetcher is not None:
                await fetcher.close()

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
    docs.install(app, catalog.names())
    app.add_middleware(headers.HeaderLimit, max_bytes=settings.max_header_bytes, max_count=settings.max_header_count)
    app.add_middleware(observe.Observe, metrics=metrics)  # outermost: ids, logs and counts every request
    return app
