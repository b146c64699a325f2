"""TraceRequests: the span of each request, as an inner layer of the front layer (app/api/asgi/front.py),
inside its log line and header cap (a request whose headers are refused with 431 gets no span: its trace
context is never read).

The caller's W3C `traceparent` (and `tracestate`) is the parent when it is valid; the sampler decides from
it and OTEL_TRACES_SAMPLER. The span is current while the route runs, so the pipeline's spans (cache read,
admission, flights, upstream attempts, cache write) are its children, also those made in the flights'
tasks (asyncio copies the context into every task and callback). Its attributes are the route, the team,
the model, the items, hits and misses (from the request's Exchange, as the log line has them) and the
status. The trace id goes into the request's Exchange: the front layer writes it in the access log line
(also when the request is not sampled: it is still the caller's trace), and, when sampled, as the exemplar
of the request-duration histogram.

Probes and scrapes (/healthz, /readyz, /metrics) get no span.
"""

from __future__ import annotations

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.asgi.exchange import Exchange, exchange_of
from ..api.asgi.observe import OTHER_ROUTE
from ..api.routes import METRIC_ROUTES as ROUTES
from ..api.routes import QUIET
from .tracing import Tracing

CARRIED = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


class TraceRequests:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else None
        if path is None or path in QUIET:
            await self.app(scope, receive, send)
            return
        carrier = {CARRIED[k]: v.decode("latin-1") for k, v in scope["headers"] if k in CARRIED}
        parent = self.tracing.extract(carrier) if carrier else None
        route = ROUTES.get(path, OTHER_ROUTE)
        method = scope["method"]
        name = f"{method} {path}" if route != OTHER_ROUTE else method  # no span name per unknown path
        span = self.tracing.tracer.start_span(name, parent, SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span, parent))
        exchange = exchange_of(scope)
        ids = span.get_span_context()
        exchange.trace_id = format(ids.trace_id, "032x")
        exchange.sampled = ids.trace_flags.sampled
        try:
            if span.is_recording():
                attributes = {"http.request.method": method, "gateway.route": route}
                if route != OTHER_ROUTE:
                    attributes["http.route"] = attributes["url.path"] = path
                span.set_attributes(attributes)
                await self.recorded(span, exchange, scope, receive, send)
            else:  # left out by the sampler: its ids only (log line, upstream traceparent)
                await self.app(scope, receive, send)
        finally:
            span.end()
            context.detach(token)

    async def recorded(self, span: trace.Span, exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:  # its type only: a message may quote what the caller sent
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            _finish(span, exchange, exchange.status)  # set by the front layer as the answer starts (500 until then)


def _finish(span: trace.Span, exchange: Exchange, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if exchange.team is not None:
        span.set_attribute("gateway.team", exchange.team)
    if exchange.model is not None:
        span.set_attributes(
            {"gateway.model": exchange.model, "gateway.items": exchange.items, "gateway.hits": exchange.hits,
             "gateway.misses": exchange.misses, "gateway.billed_tokens": exchange.tokens}
        )  # fmt: skip
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
