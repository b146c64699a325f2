"""create_app(settings) and its lifespan: the one place that builds the catalog, opens clients and wires
the parts together. With app/wiring/ (the parts built from the settings), the only reader of Settings: every
component below takes plain values or a small typed config. Nothing happens at import time."""

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

from .api import batches, dashscope, docs, openai, ops, rendering, tasks, usage
from .api.answer import Skeletons
from .api.asgi import fastpath
from .api.asgi.drain import Drain
from .api.asgi.front import Fronted
from .api.asgi.headerlimit import HeaderLimit
from .api.routes import FAST_PATHS
from .api.turns import Turns
from .config import masking
from .config.catalog import Catalog, build_catalog
from .config.settings import CONFIG_ENV, Settings
from .config.upstream import UpstreamConfig
from .flights.batcher import call_values_of
from .flights.wiring import open_flights
from .inputs import tokentext
from .inputs.items import TextItems
from .jobs.wiring import JobsPlan, start_jobs
from .limits.admission import TeamLimiter
from .limits.quota import UpstreamQuota
from .metricfiles import multiprocess_dir
from .metrics import Metrics
from .runtime.looplag import LoopLag
from .runtime.state import Gateway
from .server.protocol import STATE_KEY
from .service import EmbeddingService
from .teams.keys import Authenticator
from .teams.reload import TeamsReloader
from .teams.team import Team, teams_from, unknown_models
from .telemetry import config as trace_config
from .telemetry.incoming import TraceRequests
from .telemetry.pipeline import TracedCache, traced_limiter
from .telemetry.tracing import Tracing
from .upstreams.adapter import Upstream
from .upstreams.fleet import Fleet
from .usage.rows import Keys
from .usage.wiring import open_usage
from .wiring.parts import (
    calls_memory_of,
    caps_of,
    connections_of,
    desks_of,
    fetcher_of,
    flight_times,
    memory_of,
    text_fetcher_of,
    vector_texts,
)
from .wiring.stores import open_cache, open_limits
from .wiring.upstreams import open_guard, open_upstream, unavailable

log = logging.getLogger("embedding_gateway")


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
    catalog = build_catalog(settings.models, configs, available)
    for name, reason in available.items():
        if reason and configs[name].kind == "local" and settings.local_model:
            log.warning("local model not served: %s", reason)
    teams = teams_from(settings.teams)
    traces = trace_config.from_env(os.environ)
    metrics = Metrics(
        CollectorRegistry(), models=catalog.names(), upstreams=configs, teams=teams, multiprocess_dir=multiprocess_dir()
    )
    metrics.openmetrics = traces is not None  # /metrics answers OpenMetrics when asked: the exemplars' format
    for spec in catalog:
        metrics.init_model([d.upstream for d in spec.deployments], spec.name, spec.modalities)
    keys = {name: cfg.keys for name, cfg in settings.teams.items()}
    auth = Authenticator(teams, keys, required=settings.gateway_auth == "required", admins=settings.admins)
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
    flights = open_flights(cache, upstreams, flight_times(s), metrics, tracing, call_values_of(p.configs),
                           calls_memory_of(s, metrics))  # fmt: skip
    reads = cache if tracing is None else TracedCache(cache, tracing)
    team_limits = TeamLimiter(limits, metrics, window_s=s.limits_window_s)
    if tracing is not None:
        team_limits = traced_limiter(team_limits, tracing)
    service = EmbeddingService(reads, flights, metrics, team_limits, quota, namespace=s.cache_namespace,
                               deadline_s=s.request_deadline_s, route=upstreams.identity)  # fmt: skip
    stack.push_async_callback(service.close)
    turns = Turns()  # large requests' slices, one per loop turn: parsing (api/) and keys (the service)
    service.pause = turns.take
    fetcher = fetcher_of(s, metrics)
    if fetcher is not None:
        stack.push_async_callback(fetcher.close)
    kinds: dict[str, str] = {name: cfg.kind for name, cfg in p.configs.items()}
    floats, base64s = vector_texts(s)
    # The usage ledger in the limits Redis: the service bills it, and its close writes the last batch.
    keys = Keys(s.cache_namespace, s.usage.retention_days)
    meter, reader = open_usage(keys, s.usage.flush_s, p.catalog, metrics, p.auth, limits.census.link, service)
    return Gateway(caps_of(s), p.catalog, cache, service, upstreams, metrics, kinds, p.auth, team_limits, quota,
                   floats, base64s, memory_of(s, metrics), meter, reader, *desks_of(s, metrics), fetcher=fetcher,
                   turns=turns, texts=TextItems(metrics.memo("texts")),
                   skeletons=Skeletons(metrics.memo("skeletons")))  # fmt: skip


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
    for entry in unknown_models(p.settings.teams, set(p.catalog.names())):
        log.warning("%s is not served here (unknown or disabled model)", entry)
    if not p.catalog.names():
        log.warning("no model is enabled: set DASHSCOPE_API_KEY or OPENAI_API_KEY, or install the local extra")


def teams_reloader(p: Plan) -> TeamsReloader:
    """The teams of the config file, read again when it changes (each worker; stop() it at shutdown)."""
    s = p.settings
    return TeamsReloader(os.environ.get(CONFIG_ENV), s.teams, lambda: Settings().teams,
                         auth_required=s.gateway_auth == "required", interval_s=s.teams_reload_s, auth=p.auth,
                         metrics=p.metrics, served=set(p.catalog.names()))  # fmt: skip


async def jobs_of(p: Plan, gw: Gateway, stack: AsyncExitStack) -> None:
    """Batch jobs, on the limits' Redis (without one, or on a cluster, the batch routes answer 503 saying so)."""
    s, url = p.settings, p.settings.limits_url()
    if url is not None:
        jobs = JobsPlan(url, s.redis_cluster, s.limits_timeout_s, s.cache_namespace, s.jobs, lambda: text_fetcher_of(s))
        await start_jobs(gw, stack, jobs)


def lifespan_of(p: Plan) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, object]]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            connections = connections_of(p.settings, p.configs, p.catalog, p.metrics)
            stack.callback(connections.close)
            gw = app.state.gateway = await open_gateway(p, stack)
            lag = LoopLag(p.metrics.loop_lag)
            lag.start()
            stack.push_async_callback(lag.stop)
            await jobs_of(p, gw, stack)
            drain = Drain(gw, p.settings.shutdown_drain_s)
            drain.install()
            stack.callback(drain.uninstall)
            reloader = teams_reloader(p)  # file changes, SIGHUP
            reloader.start()
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
        generate_unique_id_function=docs.operation_id,
    )
    rendering.install_handlers(app)
    app.include_router(openai.router)
    app.include_router(dashscope.router)
    app.include_router(dashscope.uploads)
    app.include_router(ops.router)
    app.include_router(usage.router)
    app.include_router(batches.router)
    app.include_router(tasks.router)
    docs.install(app, p.catalog.names(), auth_required=p.auth.required)
    fast = fastpath.routes_of(app, FAST_PATHS)
    for path in sorted(set(FAST_PATHS) - set(fast)):
        log.warning("POST %s is served by FastAPI's routing, not the fast path (it declares dependencies)", path)
    header_limit = HeaderLimit(max_bytes=p.settings.max_header_bytes, max_count=p.settings.max_header_count)
    app.serve_front(p.metrics, fast, header_limit)  # aliases, ids, metrics, logs, header cap, drain, fast path
    if p.tracing is not None:  # the request's span: inside the header cap and the front's log line (its trace id)
        app.add_front(TraceRequests, tracing=p.tracing)
    return app
