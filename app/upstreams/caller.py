"""UpstreamCaller: the one way down from the flights to the upstreams.

The flights (app/flights/) hand it one chunk of misses at a time (a `Batch`: model, parameters, up to the
model's batch limit of items) and get back checked vectors, rows in item order, with the tokens the
upstream billed (a `Result`), or a GatewayError. Nothing below it calls back up.

`GuardedUpstreams` is the caller the gateway wires (app/main.py): per upstream name, an adapter
(dashscope.py, openai.py, local.py) behind its guard (guard.py: breaker, retries, in-flight bound,
deadline), with the account's shared quota (`UpstreamGate`) admitting every attempt just before it goes,
and the upstream metrics counted around each attempt.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..catalog import ModelSpec
from ..errors import GatewayError, Unavailable, UpstreamInvalid, UpstreamTimeout
from ..metrics import Metrics
from .adapter import Batch, Result, Upstream
from .guard import Guard

log = logging.getLogger("embedding_gateway.upstreams")


class UpstreamCaller(Protocol):
    async def call(self, batch: Batch, deadline: float) -> Result:
        """One upstream call for `batch`, retried within `deadline` (a `time.monotonic()` instant): its
        vectors checked (count, indices, length, finite) and its billed tokens."""
        ...


class UpstreamGate(Protocol):
    """Admission to an upstream call (the account's shared quota): returns when the call may go, or raises
    RateLimited/Unavailable when it may not within its wait budget."""

    async def admit(self, spec: ModelSpec, items: int, tokens: int) -> None: ...


class OpenGate:
    """No shared quota: every call may go at once."""

    async def admit(self, spec: ModelSpec, items: int, tokens: int) -> None:
        return None


class GuardedUpstreams:
    """The UpstreamCaller of the gateway: `adapters` and `guards` by upstream name (the same names)."""

    def __init__(
        self, adapters: dict[str, Upstream], guards: dict[str, Guard], metrics: Metrics, gate: UpstreamGate
    ) -> None:
        missing = sorted(set(adapters) - set(guards))
        if missing:
            raise ValueError(f"no guard for upstream(s) {', '.join(missing)}")
        self.adapters = adapters
        self.guards = guards
        self.metrics = metrics
        self.gate = gate

    async def call(self, batch: Batch, deadline: float) -> Result:
        spec = batch.spec
        upstream = self.adapters.get(spec.upstream)
        if upstream is None:
            raise Unavailable(f"model {spec.name} has no upstream configured")
        tokens = sum(it.est_tokens for it in batch.items)

        async def admit() -> None:
            await self.gate.admit(spec, len(batch.items), tokens)

        return await self.guards[spec.upstream].run(lambda: self._attempt(upstream, batch), admit, deadline)

    async def _attempt(self, upstream: Upstream, batch: Batch) -> Result:
        m = self.metrics
        up, model = m.upstream(upstream.name), m.model(batch.spec.name)
        m.child(m.upstream_batch, up, model).observe(len(batch.items))
        t0 = time.perf_counter()
        try:
            result = await upstream.embed(batch)
        except GatewayError as exc:
            m.child(m.upstream_requests, up, model, upstream_status(exc)).inc()
            m.child(m.upstream_errors, up, model, type(exc).__name__).inc()
            if isinstance(exc, UpstreamInvalid):
                log.warning("upstream %s broke its contract for model %s: %s", upstream.name, model, exc.message)
            raise
        finally:
            m.child(m.upstream_duration, up, model).observe(time.perf_counter() - t0)
        m.child(m.upstream_requests, up, model, "200").inc()
        return result

    def states(self) -> dict[str, tuple[str, str]]:
        """Per upstream: the adapter's state (`ready`, or `loading` while the local model loads) and its
        circuit (closed, open or half-open)."""
        return {
            name: (getattr(adapter, "state", "ready"), self.guards[name].breaker.state)
            for name, adapter in self.adapters.items()
        }


def upstream_status(exc: GatewayError) -> str:
    """The upstream's own HTTP status when it answered; `timeout` or `error` when no usable answer came."""
    if exc.upstream_status is not None:
        return str(exc.upstream_status)
    return "timeout" if isinstance(exc, UpstreamTimeout) else "error"
