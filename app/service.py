"""EmbeddingService: the path of one request from items to vectors, and nothing else.

keys -> one cache read -> misses (duplicates once) -> coalescer (identical in-flight misses once, across
replicas through Redis leases) -> batcher (misses of concurrent requests combined up to the model's batch
limit) -> guard (breaker, retries, deadline; the gate admits each attempt) -> upstream -> checked vectors ->
one cache write per upstream call -> vectors in input order.
The service sees no HTTP, Redis or httpx types: it talks to a VectorCache and Upstream adapters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .cache.keys import KeyMaker
from .cache.store import VectorCache
from .catalog import ModelSpec
from .errors import GatewayError, Unavailable, UpstreamTimeout
from .flights.batcher import Batcher
from .flights.coalescer import Coalescer, FlightResult
from .flights.leases import Leases, LocalLeases
from .items import Item
from .metrics import Metrics
from .params import Params
from .upstreams.adapter import Batch, Result, Upstream
from .upstreams.breaker import CircuitBreaker
from .upstreams.guard import Guard, RetryPolicy


class UpstreamGate(Protocol):
    """Admission to an upstream call (the account's shared quota): returns when the call may go, or raises
    RateLimited/Unavailable when it may not within its wait budget."""

    async def admit(self, spec: ModelSpec, items: int, tokens: int) -> None: ...


class OpenGate:
    async def admit(self, spec: ModelSpec, items: int, tokens: int) -> None:
        return None


@dataclass(slots=True)
class EmbedRequest:
    spec: ModelSpec
    params: Params
    items: list[Item]
    team: str | None = None
    cache_read: bool = True
    cache_write: bool = True


@dataclass(slots=True)
class EmbedResult:
    vectors: list[bytes]  # little-endian float32 bytes, one per input item, in input order
    hits: int
    misses: int
    billed_tokens: int
    upstream_seconds: float = 0.0
    upstream_items: int = 0
    hit_tokens: int = 0
    coalesced: int = 0  # items answered by another request's upstream call


class EmbeddingService:
    def __init__(
        self,
        cache: VectorCache,
        upstreams: dict[str, Upstream],
        metrics: Metrics,
        *,
        namespace: str,
        concurrency: int = 64,
        gate: UpstreamGate | None = None,
        guards: dict[str, Guard] | None = None,
        leases: Leases | None = None,
        deadline_s: float = 30.0,
        batch_window_s: float = 0.002,
        coalesce_wait_s: float = 10.0,
    ) -> None:
        """`guards`: retries and breaker per upstream (default: a guard allowing `concurrency` calls in
        flight); `leases`: cross-replica coalescing (default: within this process only)."""
        self.gate = gate or OpenGate()
        self.cache = cache
        self.upstreams = upstreams
        self.metrics = metrics
        self.namespace = namespace
        self.deadline_s = deadline_s
        self.guards = guards or {}
        for name in upstreams:
            if name not in self.guards:
                breaker = CircuitBreaker(name, failures=10, open_s=5.0, metrics=metrics)
                self.guards[name] = Guard(breaker, RetryPolicy(), concurrency=concurrency)
        self.flights = Coalescer(
            lambda c: Batcher(self._send, c.delivered, window_s=batch_window_s),
            cache,
            self._timed_write,
            leases or LocalLeases(),
            wait_s=coalesce_wait_s,
            lease_s=deadline_s + 1.0,
        )

    async def embed(self, req: EmbedRequest) -> EmbedResult:
        spec, params = req.spec, req.params
        if spec.upstream not in self.upstreams:
            raise Unavailable(f"model {spec.name} has no upstream configured")
        deadline = time.monotonic() + self.deadline_s
        keys = KeyMaker(self.namespace, spec.upstream, spec.upstream_model, params).keys(req.items)
        unique = list(dict.fromkeys(keys))
        size = 4 * params.dimension
        found: dict[str, bytes] = {}
        if req.cache_read:
            values = await self._timed_read(unique)
            found = {k: v for k, v in zip(unique, values, strict=True) if v is not None and len(v) == size}
        missing: list[tuple[str, Item]] = []
        if len(found) < len(unique):
            first = dict(zip(keys, req.items, strict=True))
            missing = [(k, first[k]) for k in unique if k not in found]
        fetched = FlightResult({})
        waited = 0.0
        hit_items = req.items
        missed: set[str] = set()
        if missing:
            t0 = time.perf_counter()
            fetched = await self.flights.fetch(
                spec, params, missing, deadline=deadline, write=req.cache_write, shared=req.cache_read
            )
            waited = time.perf_counter() - t0
            found.update(fetched.vectors)
            missed = {k for k, _ in missing}
            hit_items = [it for k, it in zip(keys, req.items, strict=True) if k not in missed]
        self._count_items(req, keys, missed, fetched.coalesced)
        hit_tokens = sum(it.est_tokens for it in hit_items)
        team, model = self.metrics.team(req.team), self.metrics.model(spec.name)
        # Billed tokens are counted per request (a micro-batch may serve several teams: each request carries
        # its apportioned share of the bill); saved tokens are the estimate of the items the cache served.
        if fetched.billed:
            self.metrics.child(self.metrics.tokens_billed, team, model).inc(fetched.billed)
        if hit_tokens:
            self.metrics.child(self.metrics.tokens_saved, team, model).inc(hit_tokens)
        return EmbedResult(
            vectors=[found[k] for k in keys],
            hits=len(hit_items),
            misses=len(keys) - len(hit_items),
            billed_tokens=fetched.billed,
            upstream_seconds=waited,
            upstream_items=len(missing) - len(fetched.coalesced),
            hit_tokens=hit_tokens,
            coalesced=len([k for k in keys if k in fetched.coalesced]) if fetched.coalesced else 0,
        )

    async def _timed_read(self, keys: Sequence[str]) -> list[bytes | None]:
        t0 = time.perf_counter()
        values = await self.cache.get_many(keys)
        self.metrics.child(self.metrics.cache_duration, self.cache.name, "read").observe(time.perf_counter() - t0)
        return values

    async def _timed_write(self, entries: Sequence[tuple[str, bytes]]) -> None:
        t0 = time.perf_counter()
        await self.cache.set_many(entries)
        self.metrics.child(self.metrics.cache_duration, self.cache.name, "write").observe(time.perf_counter() - t0)

    async def _send(self, spec: ModelSpec, params: Params, items: list[Item], deadline: float) -> Result:
        """One upstream call for a micro-batch, through its upstream's guard (breaker, retries, deadline);
        the gate admits every attempt immediately before it goes."""
        upstream = self.upstreams[spec.upstream]
        batch = Batch(spec, params, items)
        tokens = sum(it.est_tokens for it in items)

        async def admit() -> None:
            await self.gate.admit(spec, len(items), tokens)

        return await self.guards[spec.upstream].run(lambda: self._call(upstream, batch), admit, deadline)

    async def _call(self, upstream: Upstream, batch: Batch) -> Result:
        m = self.metrics
        up, model = m.upstream(upstream.name), m.model(batch.spec.name)
        m.child(m.upstream_batch, up, model).observe(len(batch.items))
        t0 = time.perf_counter()
        try:
            result = await upstream.embed(batch)
        except GatewayError as exc:
            m.child(m.upstream_requests, up, model, upstream_status(exc)).inc()
            m.child(m.upstream_errors, up, model, type(exc).__name__).inc()
            raise
        finally:
            m.child(m.upstream_duration, up, model).observe(time.perf_counter() - t0)
        m.child(m.upstream_requests, up, model, "200").inc()
        return result

    def _count_items(self, req: EmbedRequest, keys: list[str], missing: set[str], coalesced: set[str]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for k, it in zip(keys, req.items, strict=True):
            kind = it.modality, "coalesced" if k in coalesced else "miss" if k in missing else "hit"
            counts[kind] = counts.get(kind, 0) + 1
        m = self.metrics
        model = m.model(req.spec.name)
        for (modality, result), n in counts.items():
            m.child(m.items, model, modality, result).inc(n)

    def circuit(self, upstream: str) -> str:
        """closed, open or half-open: the state of the upstream's circuit breaker."""
        guard = self.guards.get(upstream)
        return guard.breaker.state if guard is not None else "closed"

    async def close(self) -> None:
        """Finish the upstream calls in flight (their requests are still waiting for them)."""
        await self.flights.close()


def upstream_status(exc: GatewayError) -> str:
    """The upstream's own HTTP status when it answered; `timeout` or `error` when no usable answer came."""
    if exc.upstream_status is not None:
        return str(exc.upstream_status)
    return "timeout" if isinstance(exc, UpstreamTimeout) else "error"
