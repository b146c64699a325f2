"""A job's requests through the same pipeline as interactive ones (EmbeddingService: the cache first, then
only the misses through the flights, batched to the model's limit, coalesced with identical misses in
flight, written to the cache as they land), with the same team admission and usage, at background
priority: the team's limits are waited for rather than refused, and upstream calls take only quota that
interactive calls leave idle (Params.background, upstreams/idle.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ..api.tenancy import billed_tokens
from ..errors import RateLimited
from ..limits.window import US
from ..runtime.state import Gateway
from ..service import EmbedRequest, EmbedResult
from ..teams.team import Team

LIMIT_WAIT_S = 60.0  # the longest one wait for the team's limits (then asked again)


class TooLarge(Exception):
    """The request alone is over one of the team's limits: the caller splits it."""


async def embed_background(gw: Gateway, team: Team | None, req: EmbedRequest) -> EmbedResult:
    req.team = team.name if team is not None else None
    req.scope = team.scope if team is not None else None  # a scoped team's jobs read and write its scope only
    req.params = replace(req.params, background=True)
    est = sum(it.est_tokens for it in req.items)
    looked = await gw.service.lookup(req)
    if looked.misses:
        gw.meter.check_budget(team, req.spec)  # a spent budget refuses the misses of jobs too
    while True:
        adm = await gw.limits.admit(team, looked.miss_tokens(req.items))
        v = adm.verdict
        if v is None or v.ok:
            break
        if v.too_large:
            raise TooLarge()
        if v.reason == "unavailable":
            await asyncio.sleep(1.0)
            continue
        await asyncio.sleep(min(LIMIT_WAIT_S, max(0.05, v.retry_us / US)))
    async with adm, gw.quota.ledger(req.spec, req.team) as ledger:
        result = await gw.service.complete(req, looked)
        adm.billed = billed_tokens(result, est)
        ledger.billed = result.billed_tokens
    gw.meter.record(team, "", req.spec, result, adm.billed)  # in the ledger without a key id (api_key_id null)
    return result


def retry_delay(exc: Exception, attempt: int) -> float:
    """How long a job waits before asking again after a retryable failure (rate limit, 5xx, timeout)."""
    hint = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after else None
    return min(30.0, hint if hint is not None else 0.5 * 2**attempt)
