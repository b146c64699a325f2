"""Spans around the pipeline's parts, made by wrapping them where the gateway is wired (app/main.py,
app/flights/wiring.py) when traces are on: the parts themselves know nothing of tracing, and with traces
off nothing here is made or called.

- `TracedCache`: `cache.read` around each read of the service's lookup (keys asked, vectors found) and
  `cache.write` around each write of new vectors (entries).
- `TracedFlights`: `flights.wait` around the service's wait for its misses: fetched by its own upstream
  call, joined to an identical one in flight in this process, or waited for on another replica's lease;
  `gateway.coalesced` counts the items another request paid for.
- `TracedLimiter`: `admission` around the team's admission (tokens reserved for the misses, the verdict).

Attributes carry counts, names and verdicts only: never inputs, vectors, keys or messages. Under a request
the sampler left out (the current span not recording), each part is called directly: no span is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.util.types import AttributeValue

from ..cache.store import SharedRedis, VectorCache
from ..config.catalog import ModelSpec
from ..flights.coalescer import FlightResult
from ..inputs.items import Item
from ..inputs.params import Params
from ..limits.admission import Admission, TeamLimiter
from ..service import Flights
from ..teams.team import Team
from .tracing import Tracing


class TracedCache:
    """A VectorCache whose reads and writes are spans (the wrapped cache does the work)."""

    def __init__(self, inner: VectorCache, tracing: Tracing) -> None:
        self.inner = inner
        self.name = inner.name
        self.tracing = tracing

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not self.tracing.recording():
            return await self.inner.get_many(keys)
        with self.tracing.span("cache.read") as span:
            values = await self.inner.get_many(keys)
            found = sum(v is not None for v in values)
            span.set_attributes({"gateway.cache": self.name, "gateway.keys": len(keys), "gateway.found": found})
            return values

    async def set_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if not self.tracing.recording():
            await self.inner.set_many(entries)
            return
        attributes: dict[str, AttributeValue] = {"gateway.cache": self.name, "gateway.entries": len(entries)}
        with self.tracing.span("cache.write", attributes):
            await self.inner.set_many(entries)

    async def ping(self) -> bool:
        return await self.inner.ping()

    def shared_redis(self) -> SharedRedis | None:
        return self.inner.shared_redis()

    async def status(self) -> dict[str, object]:
        return await self.inner.status()

    async def close(self) -> None:
        await self.inner.close()


class TracedFlights:
    """The service's flights, each fetch a `flights.wait` span."""

    def __init__(self, inner: Flights, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    async def fetch(
        self,
        spec: ModelSpec,
        params: Params,
        missing: list[tuple[str, Item]],
        *,
        deadline: float,
        write: bool,
        shared: bool,
    ) -> FlightResult:
        if not self.tracing.recording():
            return await self.inner.fetch(spec, params, missing, deadline=deadline, write=write, shared=shared)
        attributes: dict[str, AttributeValue] = {"gateway.model": spec.name, "gateway.missing": len(missing)}
        with self.tracing.span("flights.wait", attributes) as span:
            result = await self.inner.fetch(spec, params, missing, deadline=deadline, write=write, shared=shared)
            span.set_attribute("gateway.coalesced", len(result.coalesced))
            return result

    async def close(self) -> None:
        await self.inner.close()


class TracedLimiter(TeamLimiter):
    """The team limiter, each admission an `admission` span."""

    tracing: Tracing

    async def admit(self, team: Team | None, est: int) -> Admission:
        if not self.tracing.recording():
            return await super().admit(team, est)
        with self.tracing.span("admission") as span:
            adm = await super().admit(team, est)
            v = adm.verdict
            span.set_attributes(
                {"gateway.tokens": est, "gateway.limited": v is not None,
                 "gateway.admitted": v is None or v.ok, "gateway.refusal": "" if v is None else v.reason or ""}
            )  # fmt: skip
            return adm


def traced_limiter(limiter: TeamLimiter, tracing: Tracing) -> TracedLimiter:
    """`limiter` as a TracedLimiter (the same limits, metrics and window)."""
    traced = TracedLimiter(limiter.limits, limiter.metrics, window_s=limiter.window_s)
    traced.tracing = tracing
    return traced
