"""What the embedding routes share around the service call: the caller's key -> team (before the body is
read), the models the team may use, its limits around the work (the cache read, then admission for the
misses, then reconciliation with the upstream's bill when there is one), the rate-limit response headers
and the log fields."""

from __future__ import annotations

from fastapi import Request

from ..config.catalog import ModelSpec
from ..errors import Forbidden, Wire, wire_of
from ..limits.admission import Admission
from ..limits.window import US
from ..runtime.state import Gateway
from ..service import EmbedRequest, EmbedResult
from ..teams.team import Team
from .asgi.exchange import Exchange, exchange_of
from .body import cache_control


def authenticate(request: Request, gw: Gateway) -> Team | None:
    """The caller's team (None when auth is off); 401 in the caller's wire format otherwise."""
    team = gw.auth.team_of(request.headers, dashscope=wire_of(request.scope["path"]) is Wire.DASHSCOPE)
    if team is not None:
        exchange_of(request.scope).team = team.name
    return team


def model_for(gw: Gateway, team: Team | None, name: str, param: str = "model") -> ModelSpec:
    spec = gw.model(name, param)
    if team is not None and not team.allows(spec.name):
        raise Forbidden(f"{param}: team {team.name} may not use model {spec.name}", param=param)
    return spec


async def embed(request: Request, gw: Gateway, team: Team | None, req: EmbedRequest) -> EmbedResult:
    req.team = team.name if team is not None else None
    req.cache_read, req.cache_write = cache_control(request)
    est = sum(it.est_tokens for it in req.items)
    # The cache first: the team's admission reserves tokens only for the misses (hits are not billed), so a
    # whole hit is admitted with 0 tokens and has nothing to reconcile: one script call (docs/limits.md).
    looked = await gw.service.lookup(req)
    adm = await gw.limits.admit(team, looked.miss_tokens(req.items))
    exchange = exchange_of(request.scope)
    exchange.headers = rate_headers(adm)  # on the response, and on the 429 enforce() may raise
    adm.enforce()
    async with adm, gw.quota.ledger(req.spec, req.team) as ledger:
        result = await gw.service.complete(req, looked)
        adm.billed = billed_tokens(result, est)
        ledger.billed = result.billed_tokens
    exchange.headers = rate_headers(adm)
    log_result(exchange, req.spec.name, result)
    return result


def log_result(exchange: Exchange, model: str, result: EmbedResult) -> None:
    exchange.model = model
    exchange.items = len(result.vectors)
    exchange.hits = result.hits
    exchange.misses = result.misses
    exchange.tokens = result.billed_tokens
    exchange.upstream_s = round(result.upstream_seconds, 6)


def billed_tokens(result: EmbedResult, est: int) -> int:
    """What the request costs its team: the upstream's bill (cache hits cost nothing); the estimate of the
    items that went upstream when the upstream reports no usage."""
    if result.upstream_items == 0:
        return 0
    if result.billed_tokens > 0:
        return result.billed_tokens
    return max(0, est - result.hit_tokens)


def rate_headers(adm: Admission) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} as OpenAI sends them; reset is when the oldest
    request of the window leaves it (remaining grows then)."""
    v, q = adm.verdict, adm.quota
    if v is None:
        return {}
    headers: dict[str, str] = {}
    for kind, limit, used in (("requests", q.rpm, v.requests), ("tokens", q.tpm, v.tokens)):
        if limit is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - used))
            headers[f"x-ratelimit-reset-{kind}"] = duration(v.reset_us)
    if v.too_large:
        headers["x-should-retry"] = "false"
    return headers


def duration(us: int) -> str:
    """OpenAI's style: 250ms, 1.5s, 6m0s."""
    if us <= 0:
        return "0s"
    if us < US:
        return f"{-(-us // 1000)}ms"
    seconds = round(us / US, 3)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"
