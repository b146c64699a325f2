"""The upstreams built from their settings: which can serve, their adapters (HTTP client or local model) and
their guards (breaker, retries, calls in flight)."""

from __future__ import annotations

from ..config.settings import OPENAI_URL, Settings
from ..config.upstream import UpstreamConfig
from ..metrics import Metrics
from ..telemetry.tracing import Tracing
from ..telemetry.upstream import TracedPoster, TracedUpstream
from ..upstreams import local
from ..upstreams.adapter import Upstream
from ..upstreams.breaker import CircuitBreaker
from ..upstreams.dashscope import DashScopeUpstream
from ..upstreams.guard import Guard, RetryPolicy
from ..upstreams.http import HttpClient, Poster
from ..upstreams.local_model import LocalModelUnavailable
from ..upstreams.openai import OpenAIUpstream


def unavailable(name: str, cfg: UpstreamConfig, settings: Settings) -> str | None:
    """None when the upstream can serve (a key, a non-default base URL, a model installed), else what
    would enable it."""
    if cfg.kind == "dashscope":
        return None if cfg.key() else f"set {cfg.api_key_env or 'DASHSCOPE_API_KEY'}"
    if cfg.kind == "openai":
        if cfg.key() or cfg.base_url.rstrip("/") != OPENAI_URL:
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
            upstream = OpenAIUpstream(name, http, cfg.base_url, cfg.key(), cfg.encoding_format)
    return upstream if tracing is None else TracedUpstream(upstream, tracing)


def open_guard(name: str, cfg: UpstreamConfig, settings: Settings, metrics: Metrics) -> Guard:
    """Breaker and retries for one upstream; at most `max_connections` of its calls in flight, so that
    calls wait here, within their deadline, rather than for a connection in the HTTP client's pool."""
    breaker = CircuitBreaker(name, failures=settings.breaker_failures, open_s=settings.breaker_open_s, metrics=metrics)
    policy = RetryPolicy(settings.retry_attempts, settings.retry_base_s, settings.retry_max_s)
    return Guard(breaker, policy, concurrency=cfg.max_connections)
