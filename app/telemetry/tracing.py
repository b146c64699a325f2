"""Tracing: the OpenTelemetry SDK as the gateway uses it, one per worker process.

Made in create_app from the configuration (nothing starts then: the CLI also calls create_app in the
supervisor, to check the settings before forking workers), started in each worker's lifespan (the
provider, the OTLP/HTTP exporter and the batch processor's one export thread, with its bounded queue:
OTEL_BSP_MAX_QUEUE_SIZE, 2048 spans by default, dropped beyond), shut down at the lifespan's end (the
spans still queued are sent, within the exporter's timeout).

The provider is the gateway's own, not the global one: nothing else in the process gets its tracer by
accident, and tests can start several apps in one process. Only W3C trace context is read from callers
and sent upstream (`traceparent`, `tracestate`): baggage is not forwarded to third-party upstreams.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from .config import TraceConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("embedding_gateway.telemetry")
SCOPE = "embedding_gateway"


class Tracing:
    def __init__(self, config: TraceConfig) -> None:
        self.config = config
        self.propagator = TraceContextTextMapPropagator()
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self.provider: TracerProvider | None = None

    def start(self) -> None:
        """The SDK, imported only now (a gateway without traces never imports it), and its export thread."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if self.provider is not None:
            return
        name = self.config.service_name
        resource = Resource.create({"service.name": name} if name else {})
        provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER[_ARG]
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)
        c = self.config
        ratio = "" if c.ratio is None else f" {c.ratio:g}"
        log.info("traces: OTLP/HTTP to %s, sampler %s%s", c.endpoint, c.sampler, ratio)

    def shutdown(self) -> None:
        """Send what is queued (bounded by the exporter's timeout) and stop the export thread."""
        provider, self.provider = self.provider, None
        self.tracer = trace.NoOpTracer()
        if provider is not None:
            provider.shutdown()

    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None, kind: SpanKind = SpanKind.INTERNAL
    ) -> AbstractContextManager[trace.Span]:
        """A child of the current span, current inside the `with`; an exception leaving it sets the error
        status but is not recorded as an event (its message may quote what a caller or an upstream sent)."""
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes, record_exception=False)

    @staticmethod
    def recording() -> bool:
        """Whether the current span is sampled: a child of one that is not would not be either, so the
        wrappers call their part directly then (no span made for the requests the sampler left out)."""
        return trace.get_current_span().is_recording()

    def extract(self, carrier: Mapping[str, str]) -> context.Context:
        return self.propagator.extract(carrier)

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """The current span's `traceparent` (and `tracestate`) into `carrier`; nothing when there is none."""
        self.propagator.inject(carrier)
