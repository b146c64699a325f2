"""A job's requests through the same pipeline as interactive ones (EmbeddingService: the cache first, then
only the misses through the flights, batched to the model's limit, coalesced with identical misses in
flight, written to the cache as they land), with the same team admission and usage, at background
priority: the team's limits are waited for rather than refused, and upstream calls take only quota that
interactive calls leave idle (Params.background, upstreams/idle.py)."""

from __future__ import annotations

from dataclasses import replace

from ..errors import RateLimited
from ..service import EmbedRequest, EmbedResult
from ..teams.team import Team
from .host import Host


async def embed_background(host: Host, team: Team | None, req: EmbedRequest) -> EmbedResult:
    """The service's one call at background priority: the team's limits waited for (a request larger than
    one of them alone raises OverLimit), upstream calls on idle quota."""
    req.params = replace(req.params, background=True)
    return await host.service.embed(team, req)


def retry_delay(exc: Exception, attempt: int) -> float:
    """How long a job waits before asking again after a retryable failure (rate limit, 5xx, timeout)."""
    hint = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after else None
    return min(30.0, hint if hint is not None else 0.5 * 2**attempt)
