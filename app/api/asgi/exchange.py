"""Exchange: what the front layer and the route hand each other about one request, in one typed object.

The front layer (front.py) makes it as a request comes in and keeps it in the ASGI scope under `SCOPE_KEY`; a
route (or an error handler, or another front layer) reaches it with `exchange_of(scope)`. The route fills
it: the caller's team (auth), its lease on the memory budget (bodies, fetched media: app/runtime/budget.py), the
response headers it adds (the rate-limit headers, which go on every response, errors included) and the
fields of the log line (model, items, hits, misses, tokens, and upstream_s, the time spent waiting on the
upstream, which the overhead histogram subtracts), and the trace id when traces are on. The front layer reads it
back when the response starts (headers) and when it ends (metrics, log line, the lease and desk given back).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from ...runtime.budget import Lease, MemoryBudget

SCOPE_KEY = "gateway.exchange"


@dataclass(slots=True)
class Exchange:
    request_id: str
    team: str | None = None
    key_id: str = ""  # the caller's key id (usage ledger; never the key), '' while auth is off
    headers: Sequence[tuple[bytes, bytes]] | None = None  # response headers the route adds, as the head holds them
    model: str | None = None  # the fields below are set together, once the service answered
    items: int = 0
    hits: int = 0
    misses: int = 0
    tokens: int = 0
    upstream_s: float = 0.0
    lease: Lease | None = None  # the request's share of the memory budget, released when it ends
    desk: Callable[[], None] | None = None  # gives back the team's desk it holds (limits/desks.py) when it ends
    trace_id: str | None = None  # 32 hex digits when traces are on (app/telemetry/incoming.py)
    sampled: bool = False  # whether its span is exported (then the trace id is an exemplar)
    status: int = 500  # the answer's, once it started (500 until then)
    closing: bool = False  # the answer says Connection: close (the gateway is draining: asgi/drain.py)

    def log_fields(self, line: dict[str, Any]) -> None:
        """Add this request's fields to its log line (never inputs, vectors or keys)."""
        if self.team is not None:
            line["team"] = self.team
        if self.model is not None:
            line["model"] = self.model
            line["items"] = self.items
            line["hits"] = self.hits
            line["misses"] = self.misses
            line["tokens"] = self.tokens
            line["upstream_s"] = self.upstream_s
        if self.trace_id is not None:
            line["trace_id"] = self.trace_id


def exchange_of(scope: Scope) -> Exchange:
    """This request's Exchange. Without the front layer (a bare app in a test), a new one with a random
    request id, kept in the scope for the rest of the request."""
    exchange: Exchange | None = scope.get(SCOPE_KEY)
    if exchange is None:
        exchange = scope[SCOPE_KEY] = Exchange(uuid.uuid4().hex)
    return exchange


def lease_of(scope: Scope, budget: MemoryBudget) -> Lease:
    """The request's lease on the memory budget, made at its first use and kept in its Exchange, which
    the front layer releases when the request ends. It holds for the caller's team (known by then: routes
    authenticate first), which the budget's share binds."""
    exchange = exchange_of(scope)
    if exchange.lease is None:
        exchange.lease = budget.lease(exchange.team)
    return exchange.lease
