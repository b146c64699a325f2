"""EmbeddingService: the path of one request from items to vectors, and nothing else.

keys -> one cache read -> misses (duplicates once) -> the flights (app/flights/: identical in-flight misses
once, across replicas through Redis leases; misses of concurrent requests batched up to the model's limit;
each chunk sent through the upstream caller: guard, quota gate, adapter; new vectors written to the cache)
-> vectors in input order. Each layer calls only the one below it and gets its answer back.
The service sees no HTTP, Redis or httpx types: it talks to a VectorCache and the flights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .cache.checks import usable
from .cache.keys import KeyMaker
from .cache.store import VectorCache
from .config.catalog import ModelSpec
from .flights.coalescer import FlightResult
from .inputs.items import Item
from .inputs.params import Params
from .metrics import Metrics


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


@dataclass(slots=True)
class Lookup:
    """A request's cache keys (per item, and each once) and the vectors the cache held for them."""

    params: Params
    keys: list[str]
    unique: list[str]
    found: dict[str, bytes]

    def miss_tokens(self, items: Sequence[Item]) -> int:
        """The estimated tokens of the items the cache did not hold: what the team's admission reserves."""
        return sum(it.est_tokens for k, it in zip(self.keys, items, strict=True) if k not in self.found)


class Flights(Protocol):
    """What the service needs of the miss path (app/flights/: the coalescer, or it traced)."""

    async def fetch(
        self, spec: ModelSpec, params: Params, missing: list[tuple[str, Item]], *, deadline: float, write: bool,
        shared: bool,
    ) -> FlightResult: ...  # fmt: skip

    async def close(self) -> None: ...


def by_upstream_name(spec: ModelSpec) -> str:
    return spec.upstream


class EmbeddingService:
    def __init__(
        self,
        cache: VectorCache,
        flights: Flights,
        metrics: Metrics,
        *,
        namespace: str,
        deadline_s: float,
        route: Callable[[ModelSpec], str] = by_upstream_name,
    ) -> None:
        """`route`: the cache identity of the deployment a request for a model goes to (the fleet's)."""
        self.cache = cache
        self.flights = flights
        self.metrics = metrics
        self.namespace = namespace
        self.deadline_s = deadline_s
        self.route = route

    async def embed(self, req: EmbedRequest) -> EmbedResult:
        return await self.complete(req, await self.lookup(req))

    async def lookup(self, req: EmbedRequest) -> Lookup:
        """The request's keys and what the cache holds for them (one read), before its team's admission."""
        params = replace(req.params, identity=self.route(req.spec))
        keys = KeyMaker(self.namespace, params.identity, req.spec.upstream_model, params).keys(req.items)
        unique = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        if req.cache_read:
            values = usable(await self._timed_read(unique), 4 * params.dimension, self.metrics)
            found = {k: v for k, v in zip(unique, values, strict=True) if v is not None}
        return Lookup(params, keys, unique, found)

    async def complete(self, req: EmbedRequest, looked: Lookup) -> EmbedResult:
        """The vectors of a looked-up request: its misses fetched through the flights."""
        spec, params, keys, unique, found = req.spec, looked.params, looked.keys, looked.unique, dict(looked.found)
        deadline = time.monotonic() + self.deadline_s
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

    def _count_items(self, req: EmbedRequest, keys: list[str], missing: set[str], coalesced: set[str]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for k, it in zip(keys, req.items, strict=True):
            kind = it.modality, "coalesced" if k in coalesced else "miss" if k in missing else "hit"
            counts[kind] = counts.get(kind, 0) + 1
        m = self.metrics
        model = m.model(req.spec.name)
        for (modality, result), n in counts.items():
            m.child(m.items, model, modality, result).inc(n)

    async def close(self) -> None:
        """Finish the upstream calls in flight (their requests are still waiting for them)."""
        await self.flights.close()
