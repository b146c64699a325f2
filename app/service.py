"""EmbeddingService: the whole path of one parsed request, from items to vectors, in one call (`embed`).

keys -> the vectors counted in the request's memory lease -> one cache read -> the team's admission for the
misses (hits are not billed: a whole hit is admitted with 0 tokens, docs/limits.md) -> misses (duplicates
once) -> the flights (app/flights/: identical in-flight misses once, across replicas through Redis leases;
misses of concurrent requests batched up to the model's limit; each chunk sent through the upstream caller:
guard, quota gate, adapter; new vectors written to the cache) -> vectors in input order, the admission
corrected to the bill and the rate-limit headers set on the reply. Each layer calls only the one below it.
The service sees no HTTP, Redis or httpx types: a VectorCache, the team limits, the quota and the flights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from .cache.checks import usable
from .cache.keys import KeyMaker, KeyMemo
from .cache.store import VectorCache
from .config.catalog import ModelSpec
from .flights.coalescer import FlightResult
from .inputs.items import Item
from .inputs.params import Params
from .limits.admission import TeamLimiter
from .limits.headers import rate_headers
from .limits.quota import UpstreamQuota
from .metrics import Metrics
from .runtime.budget import Lease, vector_bytes
from .runtime.slices import SLICE, Pause, collect, loop_turn
from .teams.team import Team

MAX_KEYINGS = 1024  # (identity, model, dimension, scope) combinations whose params and key maker are kept


@dataclass(slots=True)
class EmbedRequest:
    spec: ModelSpec
    params: Params
    items: list[Item]
    cache_read: bool = True
    cache_write: bool = True
    lease: Lease | None = None  # the request's memory lease, its vectors counted in (None: small, or a job's)


@dataclass(slots=True)
class EmbedResult:
    vectors: list[bytes]  # little-endian float32 bytes, one per input item, in input order
    hits: int
    misses: int
    billed_tokens: int
    upstream_seconds: float = 0.0
    upstream_items: int = 0
    hit_tokens: int = 0  # with counts, a whole hit's are added up after its answer (EmbeddingService._books)
    coalesced: int = 0  # items answered by another request's upstream call
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (modality, hit|miss|coalesced) -> items


@dataclass(slots=True)
class Lookup:
    """A request's cache keys (per item, and each once) and the vectors the cache held for them."""

    params: Params
    keys: list[str]
    unique: list[str]
    found: dict[str, bytes]

    @property
    def misses(self) -> bool:
        return len(self.found) < len(self.unique)

    def miss_tokens(self, items: Sequence[Item]) -> int:
        """The estimated tokens of the items the cache did not hold: what the team's admission reserves."""
        if len(self.found) == len(self.unique):
            return 0  # a whole hit
        return sum(it.est_tokens for k, it in zip(self.keys, items, strict=True) if k not in self.found)


class Reply(Protocol):
    """What the service puts on the response, whatever the outcome: the rate-limit headers, set as soon as
    the team is admitted (they go on a 429 or a 502 as on the 200). The route's Exchange is one; it also
    names the caller's key id, for the usage ledger."""

    headers: Sequence[tuple[bytes, bytes]] | None  # lower-case names and values, as the answer's head holds them
    key_id: str


class NoReply:
    headers: Sequence[tuple[bytes, bytes]] | None = None
    key_id = ""  # batch jobs: in the ledger without a key id


class Billing(Protocol):
    """The usage ledger and budgets (app/usage/meter.py): a spent budget refuses a request's misses before
    its admission; an answered request is priced and counted."""

    def check_budget(self, team: Team | None, spec: ModelSpec) -> None: ...

    def record(self, team: Team | None, key_id: str, spec: ModelSpec, result: EmbedResult, billed: int) -> None: ...

    async def close(self) -> None: ...


class NoBilling:
    def check_budget(self, team: Team | None, spec: ModelSpec) -> None:
        return None

    def record(self, team: Team | None, key_id: str, spec: ModelSpec, result: EmbedResult, billed: int) -> None:
        return None

    async def close(self) -> None:
        return None


class Flights(Protocol):
    """What the service needs of the miss path (app/flights/: the coalescer, or it traced)."""

    async def fetch(
        self, spec: ModelSpec, params: Params, missing: list[tuple[str, Item]], *, deadline: float, write: bool,
        shared: bool,
    ) -> FlightResult: ...  # fmt: skip

    async def close(self) -> None: ...


def billed_tokens(result: EmbedResult, items: Sequence[Item]) -> int:
    """What the request costs its team: the upstream's bill (cache hits cost nothing); the estimate of the
    items that went upstream when the upstream reports no usage."""
    if result.upstream_items == 0:
        return 0
    if result.billed_tokens > 0:
        return result.billed_tokens
    return max(0, sum(it.est_tokens for it in items) - result.hit_tokens)


class EmbeddingService:
    def __init__(
        self,
        cache: VectorCache,
        flights: Flights,
        metrics: Metrics,
        limits: TeamLimiter,
        quota: UpstreamQuota,
        *,
        namespace: str,
        deadline_s: float,
        route: Callable[[ModelSpec], str] = lambda spec: spec.upstream,
    ) -> None:
        """`route`: the cache identity of the deployment a request for a model goes to (the fleet's)."""
        self.cache = cache
        self.flights = flights
        self.metrics = metrics
        self.limits = limits
        self.quota = quota
        self.namespace = namespace
        self.deadline_s = deadline_s
        self.route = route
        self.billing: Billing = NoBilling()  # the usage ledger, set once it is open (app/usage/wiring.py)
        self.pause: Pause = loop_turn  # between slices of a large request's keys (runtime/slices.py); main.py
        # sets the gateway's turns
        self._keyings: dict[tuple[object, ...], tuple[Params, KeyMaker]] = {}
        self._keys = KeyMemo(metrics.memo("keys"))  # the keys of recent items of the kept key makers

    async def embed(self, team: Team | None, req: EmbedRequest, reply: Reply | None = None) -> EmbedResult:
        """The vectors of `req` for `team` (None: auth off), within the team's limits; a refusal raises
        RateLimited (or Unavailable) after the headers are on `reply`. At background priority
        (`params.background`: batch jobs) the team's limits are waited for, not refused."""
        reply = reply or NoReply()
        looked = await self._lookup(req, team.scope if team is not None else None)
        if looked.misses:
            self.billing.check_budget(team, req.spec)  # a spent budget refuses misses; hits cost nothing and pass
        admit = self.limits.admit_waiting if req.params.background else self.limits.admit
        adm = await admit(team, looked.miss_tokens(req.items))
        try:
            adm.enforce()
            if not looked.misses:  # a whole hit: no upstream call, so nothing for the quota ledger to correct
                async with adm:
                    result = self._whole_hit(req, looked)
                    adm.billed = billed = 0
            else:
                async with adm, self.quota.ledger(req.spec, team.name if team is not None else None) as ledger:
                    result = await self._complete(req, looked)
                    adm.billed = billed = billed_tokens(result, req.items)
                    ledger.billed = result.billed_tokens
        finally:  # once, whatever the outcome: where the team stands after the admission's finish, if any
            reply.headers = rate_headers(adm)
        # Counted once the answer is written (runtime/later.py): the items and tokens, the usage ledger's row
        self.metrics.later(self._books, team, reply.key_id, req, result, billed)
        return result

    async def _lookup(self, req: EmbedRequest, scope: str | None) -> Lookup:
        """The request's keys in its team's cache scope (None: shared) and what the cache holds for them (one
        read), before its team's admission."""
        params, maker, kept = self._keying(req, scope)
        items = req.items
        if len(items) <= SLICE:
            keys = self._keys.keys(maker, items) if kept else [maker.key(it) for it in items]
        else:
            keys = await collect(map(maker.key, items), self.pause)
        unique = list(dict.fromkeys(keys))
        if req.lease is not None:  # room for its vectors before any is read (a 503 or 429 costs and holds nothing)
            await req.lease.take(vector_bytes(len(unique), params.dimension), "input")
        found: dict[str, bytes] = {}
        if req.cache_read:
            values = usable(await self._timed_read(unique), 4 * params.dimension, self.metrics)
            found = {k: v for k, v in zip(unique, values, strict=True) if v is not None}
        return Lookup(params, keys, unique, found)

    def _keying(self, req: EmbedRequest, scope: str | None) -> tuple[Params, KeyMaker, bool]:
        """The request's params with the identity it is routed to, and the key maker of its cache keys: derived
        once per (identity, model, dimension, scope) and kept (True), when the request forwards no option."""
        p, identity = req.params, self.route(req.spec)
        if p.options:  # any JSON value: derived for this request alone
            params = replace(p, identity=identity)
            return params, KeyMaker(self.namespace, identity, req.spec.upstream_model, params, scope), False
        memo = (identity, req.spec.upstream_model, p.dimension, p.send_dimension, p.background, scope)
        found = self._keyings.get(memo)
        if found is None:
            if len(self._keyings) >= MAX_KEYINGS:  # bounded: team scopes come and go with reloads
                self._keyings.clear()
            params = replace(p, identity=identity)
            maker = KeyMaker(self.namespace, identity, req.spec.upstream_model, params, scope)
            found = self._keyings[memo] = (params, maker)
        return found[0], found[1], True

    async def _complete(self, req: EmbedRequest, looked: Lookup) -> EmbedResult:
        """The vectors of a looked-up request with misses: those fetched through the flights."""
        spec, params, keys, unique, found = req.spec, looked.params, looked.keys, looked.unique, looked.found
        found = dict(found)
        first = dict(zip(keys, req.items, strict=True))
        missing = [(k, first[k]) for k in unique if k not in found]
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.deadline_s
        fetched = await self.flights.fetch(
            spec, params, missing, deadline=deadline, write=req.cache_write, shared=req.cache_read
        )
        waited = time.perf_counter() - t0
        found.update(fetched.vectors)
        missed = {k for k, _ in missing}
        hit_items = [it for k, it in zip(keys, req.items, strict=True) if k not in missed]
        counts: dict[tuple[str, str], int] = {}
        for k, it in zip(keys, req.items, strict=True):
            kind = it.modality, "coalesced" if k in fetched.coalesced else "miss" if k in missed else "hit"
            counts[kind] = counts.get(kind, 0) + 1
        hit_tokens = sum(it.est_tokens for it in hit_items)
        return EmbedResult(
            vectors=[found[k] for k in keys],
            hits=len(hit_items),
            misses=len(keys) - len(hit_items),
            billed_tokens=fetched.billed,
            upstream_seconds=waited,
            upstream_items=len(missing) - len(fetched.coalesced),
            hit_tokens=hit_tokens,
            coalesced=len([k for k in keys if k in fetched.coalesced]) if fetched.coalesced else 0,
            counts=counts,
        )

    def _whole_hit(self, req: EmbedRequest, looked: Lookup) -> EmbedResult:
        """A request the cache answered whole: no flight; its items and tokens counted after it (`_books`)."""
        found, n = looked.found, len(req.items)
        return EmbedResult([found[k] for k in looked.keys], n, 0, 0)

    def _books(self, team: Team | None, key_id: str, req: EmbedRequest, result: EmbedResult, billed: int) -> None:
        """An answered request's counts, after its answer (runtime/later.py): items by modality and cache
        result (a whole hit's added up here), tokens billed and saved, its row of the usage ledger."""
        m = self.metrics
        if not result.counts:  # a whole hit's (a miss's are counted with its answer)
            counts, hit_tokens = result.counts, 0
            for it in req.items:
                kind = it.modality, "hit"
                counts[kind] = counts.get(kind, 0) + 1
                hit_tokens += it.est_tokens
            result.hit_tokens = hit_tokens
        model, owner = m.model(req.spec.name), m.team(team.name if team is not None else None)
        for (modality, cache), n in result.counts.items():
            m.tally.inc(m.child(m.items, model, modality, cache), n)
        # Billed: the request's share of its calls' bill (a micro-batch may serve several teams); saved: the
        # estimate of the items the cache served.
        if result.billed_tokens:
            m.tally.inc(m.child(m.tokens_billed, owner, model), result.billed_tokens)
        if result.hit_tokens:
            m.tally.inc(m.child(m.tokens_saved, owner, model), result.hit_tokens)
        self.billing.record(team, key_id, req.spec, result, billed)

    async def _timed_read(self, keys: Sequence[str]) -> list[bytes | None]:
        t0 = time.perf_counter()
        values = await self.cache.get_many(keys)
        m = self.metrics  # observed after the answer (runtime/later.py)
        m.later(m.tally.observe, m.child(m.cache_duration, self.cache.name, "read"), time.perf_counter() - t0)
        return values

    async def close(self) -> None:
        """Finish the upstream calls in flight (their requests are still waiting for them), then write the
        usage ledger's last batch (before the limits' Redis link closes: it is closed after the service)."""
        await self.flights.close()
        self.metrics.later.run()  # the counts of the last answers, before the ledger's last batch
        await self.billing.close()
