"""Spans of the upstream calls, and the trace context sent with them, by wrapping the parts the gateway
wires (app/main.py, app/flights/wiring.py) when traces are on:

- `TracedCaller` around the fleet, as the flights call it: `upstream.call` for one micro-batch (model,
  items), whatever deployments and rounds it takes;
- `TracedUpstream` around each deployment's adapter: `upstream.attempt` for each try (deployment, its
  kind, the attempt's number within the call, `gateway.retry` when this deployment was tried before in
  the call, `gateway.failover` when the previous attempt went to another deployment, the upstream's
  status or `timeout`/`error`), a CLIENT span;
- `TracedPoster` around an upstream's HTTP client: every POST carries the current span's `traceparent`
  (the attempt's), so the upstream's own spans, if any, join the caller's trace.

The attempts of one call are counted in a context variable that `TracedCaller` sets: the fleet's retries
and failovers run in the caller's task, so each attempt sees its call's count without the fleet knowing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..errors import GatewayError
from ..upstreams.adapter import Batch, Result, Upstream
from ..upstreams.caller import UpstreamCaller, upstream_status
from ..upstreams.http import Answer, Poster
from .tracing import Tracing

_attempts: ContextVar[list[str] | None] = ContextVar("gateway_upstream_attempts", default=None)


class TracedCaller:
    def __init__(self, inner: UpstreamCaller, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    async def call(self, batch: Batch, deadline: float) -> Result:
        if not self.tracing.recording():
            return await self.inner.call(batch, deadline)
        attributes: dict[str, AttributeValue] = {"gateway.model": batch.spec.name, "gateway.items": len(batch.items)}
        with self.tracing.span("upstream.call", attributes) as span:
            tried: list[str] = []
            token = _attempts.set(tried)
            try:
                return await self.inner.call(batch, deadline)
            finally:
                _attempts.reset(token)
                span.set_attribute("gateway.attempts", len(tried))


class TracedUpstream:
    """An adapter whose every `embed` is an `upstream.attempt` span; anything else is the adapter's."""

    def __init__(self, inner: Upstream, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing
        self.name = inner.name
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:  # the adapter's own state (the local model's `state`)
        return getattr(self.inner, name)

    async def embed(self, batch: Batch) -> Result:
        tried = _attempts.get()
        if tried is None and not self.tracing.recording():
            return await self.inner.embed(batch)
        attributes: dict[str, AttributeValue] = {"gateway.deployment": self.name, "gateway.upstream_kind": self.kind,
                                      "gateway.items": len(batch.items)}  # fmt: skip
        if tried is not None:
            attributes["gateway.attempt"] = len(tried) + 1
            attributes["gateway.retry"] = self.name in tried
            attributes["gateway.failover"] = bool(tried) and tried[-1] != self.name
            tried.append(self.name)
        with self.tracing.span("upstream.attempt", attributes, SpanKind.CLIENT) as span:
            try:
                result = await self.inner.embed(batch)
            except GatewayError as exc:
                status = upstream_status(exc)
                span.set_attribute("gateway.status", status)
                if exc.upstream_status is not None:
                    span.set_attribute("http.response.status_code", exc.upstream_status)
                span.set_attribute("error.type", exc.code or type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
                raise
            span.set_attributes({"gateway.status": "200", "http.response.status_code": 200})
            return result

    async def close(self) -> None:
        await self.inner.close()


class TracedPoster:
    """An HTTP client whose POSTs carry the current trace context (W3C `traceparent`, `tracestate`)."""

    def __init__(self, inner: Poster, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int) -> Answer:
        sent = dict(headers)
        self.tracing.inject(sent)
        return await self.inner.post(url, body, sent, max_bytes=max_bytes)

    async def close(self) -> None:
        await self.inner.close()
