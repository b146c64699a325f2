"""EmbeddingService: the path of one request from items to vectors, and nothing else.

keys -> one cache read -> misses (duplicates once) -> chunks within the model's batch limit, sent
concurrently (bounded) -> checked vectors -> one cache write -> vectors in input order.
The service sees no HTTP, Redis or httpx types: it talks to a VectorCache and Upstream adapters.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .cache import VectorCache
from .catalog import ModelSpec
from .errors import GatewayError, Unavailable, UpstreamTimeout
from .items import Item
from .keys import KeyMaker
from .metrics import Metrics
from .params import Params
from .upstreams.base import Batch, Result, Upstream


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


class EmbeddingService:
    def __init__(
        self,
        cache: VectorCache,
        upstreams: dict[str, Upstream],
        metrics: Metrics,
        *,
        namespace: str,
        concurrency: int,
        gate: UpstreamGate | None = None,
    ) -> None:
        self.gate = gate or OpenGate()
        self.cache = cache
        self.upstreams = upstreams
        self.metrics = metrics
        self.namespace = namespace
        self.concurrency = concurrency

    async def embed(self, req: EmbedRequest) -> EmbedResult:
        spec, params = req.spec, req.params
        upstream = self.upstreams.get(spec.upstream)
        if upstream is None:
            raise Unavailable(f"model {spec.name} has no upstream configured")
        keys = KeyMaker(self.namespace, spec.upstream, spec.upstream_model, params).keys(req.items)
        unique = list(dict.fromkeys(keys))
        size = 4 * params.dimension
        found: dict[str, bytes] = {}
        if req.cache_read:
            values = await self._timed_read(unique)
            found = {k: v for k, v in zip(unique, values, strict=True) if v is not None and len(v) == size}
        first = dict(zip(keys, req.items, strict=True))
        missing = [(k, first[k]) for k in unique if k not in found]
        billed, waited = 0, 0.0
        team = self.metrics.team(req.team)
        if missing:
            fresh, billed, waited = await self._fetch(upstream, spec, params, missing, req.cache_write, team)
            found.update(fresh)
        missed = {k for k, _ in missing}
        hit_items = [it for k, it in zip(keys, req.items, strict=True) if k not in missed]
        result = EmbedResult(
            vectors=[found[k] for k in keys],
            hits=len(hit_items),
            misses=len(keys) - len(hit_items),
            billed_tokens=billed,
            upstream_seconds=waited,
            upstream_items=len(missing),
            hit_tokens=sum(it.est_tokens for it in hit_items),
        )
        self._count_items(req, keys, missed, team, result.hit_tokens)
        return result

    async def _timed_read(self, keys: Sequence[str]) -> list[bytes | None]:
        t0 = time.perf_counter()
        values = await self.cache.get_many(keys)
        self.metrics.cache_duration.labels(self.cache.name, "read").observe(time.perf_counter() - t0)
        return values

    async def _timed_write(self, entries: Sequence[tuple[str, bytes]]) -> None:
        t0 = time.perf_counter()
        await self.cache.set_many(entries)
        self.metrics.cache_duration.labels(self.cache.name, "write").observe(time.perf_counter() - t0)

    async def _fetch(
        self,
        upstream: Upstream,
        spec: ModelSpec,
        params: Params,
        missing: list[tuple[str, Item]],
        write: bool,
        team: str,
    ) -> tuple[dict[str, bytes], int, float]:
        size = 1 if params.fusion else spec.max_batch
        chunks = [missing[i : i + size] for i in range(0, len(missing), size)]
        gate = asyncio.Semaphore(self.concurrency)
        t0 = time.perf_counter()

        async def one(chunk: list[tuple[str, Item]]) -> tuple[list[tuple[str, bytes]], int]:
            async with gate:
                await self.gate.admit(spec, len(chunk), sum(it.est_tokens for _, it in chunk))
                result = await self._call(upstream, Batch(spec, params, [it for _, it in chunk]), team)
            rows = result.vectors.astype("<f4", copy=False)
            return [(k, rows[i].tobytes()) for i, (k, _) in enumerate(chunk)], result.billed_tokens

        outcomes = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
        waited = time.perf_counter() - t0
        fresh: list[tuple[str, bytes]] = []
        billed = 0
        error: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                error = error or outcome
            else:
                fresh.extend(outcome[0])
                billed += outcome[1]
        if write and fresh:
            # Chunks that succeeded are kept even when another failed: a retry then pays only for the rest.
            await self._timed_write(fresh)
        if error is not None:
            raise error
        return dict(fresh), billed, waited

    async def _call(self, upstream: Upstream, batch: Batch, team: str) -> Result:
        """One upstream call, measured; the tokens it billed are counted as soon as it succeeds (a request
        whose other chunk fails was still billed for this one)."""
        m = self.metrics
        up, model = m.upstream(upstream.name), m.model(batch.spec.name)
        m.upstream_batch.labels(up, model).observe(len(batch.items))
        t0 = time.perf_counter()
        try:
            result = await upstream.embed(batch)
        except GatewayError as exc:
            m.upstream_requests.labels(up, model, upstream_status(exc)).inc()
            m.upstream_errors.labels(up, model, type(exc).__name__).inc()
            raise
        finally:
            m.upstream_duration.labels(up, model).observe(time.perf_counter() - t0)
        m.upstream_requests.labels(up, model, "200").inc()
        m.tokens_billed.labels(team, model).inc(result.billed_tokens)
        return result

    def _count_items(self, req: EmbedRequest, keys: list[str], missing: set[str], team: str, saved: int) -> None:
        m = self.metrics
        model = m.model(req.spec.name)
        pairs = zip(keys, req.items, strict=True)
        counts = Counter((it.modality, "miss" if k in missing else "hit") for k, it in pairs)
        for (modality, outcome), n in counts.items():
            m.items.labels(model, modality, outcome).inc(n)
        m.tokens_saved.labels(team, model).inc(saved)


def upstream_status(exc: GatewayError) -> str:
    """The upstream's own HTTP status when it answered; `timeout` or `error` when no usable answer came."""
    if exc.upstream_status is not None:
        return str(exc.upstream_status)
    return "timeout" if isinstance(exc, UpstreamTimeout) else "error"
