"""What the routes share around the service call: the caller's key -> team (before the body is read), a
management request's or transfer's desk, the one call into the service (its limits, the cache, the misses, the
bill and the rate-limit headers are the service's) and the log fields of its answer."""

from __future__ import annotations

from fastapi import Request

from ..limits.desks import Desks
from ..runtime.budget import SMALL_BODY_BYTES, vector_bytes
from ..runtime.state import Gateway
from ..service import EmbedRequest, EmbedResult
from ..teams.keys import one_key_header_each
from ..teams.team import Team
from ..usage.rows import key_id
from .asgi.exchange import Exchange, exchange_of, lease_of
from .body import cache_control, head_of
from .rendering import Wire, wire_of


def authenticate(request: Request, gw: Gateway) -> Team | None:
    """The caller's team (None when auth is off); 401 in the caller's wire format otherwise."""
    one_key_header_each(request.scope["headers"])
    team, key_hash = gw.auth.identify(head_of(request), dashscope=wire_of(request.scope["path"]) is Wire.DASHSCOPE)
    if team is not None:
        exchange = exchange_of(request.scope)
        exchange.team, exchange.key_id = team.name, key_id(key_hash)
    return team


def seat(request: Request, desks: Desks, team: str) -> None:
    """A desk of `desks` (management requests, or transfers) for the team's request, given back when the
    request ends; 429 when the team's are all taken in this process (app/limits/desks.py)."""
    exchange = exchange_of(request.scope)
    if exchange.desk is None:
        exchange.desk = desks.take(team)


async def embed(request: Request, gw: Gateway, team: Team | None, req: EmbedRequest) -> EmbedResult:
    """The service's answer to a parsed request; the rate-limit headers land on the exchange (every
    response carries them, errors included), and the answer's fields on its log line."""
    req.cache_read, req.cache_write = cache_control(request)
    if vector_bytes(len(req.items), req.params.dimension) > SMALL_BODY_BYTES:  # else the connection cap bounds them
        req.lease = lease_of(request.scope, gw.memory)
    exchange = exchange_of(request.scope)
    result = await gw.service.embed(team, req, exchange)
    log_result(exchange, req.spec.name, result)
    return result


def log_result(exchange: Exchange, model: str, result: EmbedResult) -> None:
    exchange.model = model
    exchange.items = len(result.vectors)
    exchange.hits = result.hits
    exchange.misses = result.misses
    exchange.tokens = result.billed_tokens
    exchange.upstream_s = round(result.upstream_seconds, 6)
