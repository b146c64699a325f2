"""The typed state that the lifespan builds once and every route reads: one object, no globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from ..api.turns import Turns
from ..api.vectortext import BASE64_RATIO, FLOAT_RATIO, VectorText, base64_json, float_json
from ..cache.store import VectorCache
from ..config.catalog import Catalog, ModelSpec
from ..config.settings import Settings
from ..errors import NotFound
from ..inputs.media.fetcher import Fetcher
from ..limits.admission import TeamLimiter
from ..limits.quota import UpstreamQuota
from ..metrics import Metrics
from ..service import EmbeddingService
from ..teams.keys import Authenticator
from ..upstreams.fleet import Fleet
from .budget import MemoryBudget


@dataclass(slots=True)
class Gateway:
    settings: Settings
    catalog: Catalog
    cache: VectorCache
    service: EmbeddingService
    upstreams: Fleet
    metrics: Metrics
    upstream_kinds: dict[str, str]
    auth: Authenticator
    limits: TeamLimiter
    quota: UpstreamQuota
    ready: bool = True
    fetcher: Fetcher | None = None  # set when media_fetch is on
    floats: VectorText = field(init=False)
    base64s: VectorText = field(init=False)
    memory: MemoryBudget = field(init=False)  # bodies and fetched media held at once (app/runtime/budget.py)
    turns: Turns = field(init=False)  # large requests take the event loop in turns (api/turns.py)

    def __post_init__(self) -> None:
        """The memos of vector text share `cache_text_max_bytes`: float text takes about twice the room of
        base64 text, so two thirds of the budget go to floats. The memory budget is the process's."""
        budget = self.settings.cache_text_max_bytes
        self.floats = VectorText(budget * 2 // 3, float_json, FLOAT_RATIO)
        self.base64s = VectorText(budget // 3, base64_json, BASE64_RATIO)
        s = self.settings
        self.memory = MemoryBudget(s.memory_budget_bytes, wait_s=s.memory_wait_s, counter=self.metrics.memory_waits)
        self.turns = Turns()

    def model(self, name: str, param: str = "model") -> ModelSpec:
        spec = self.catalog.get(name)
        if spec is None:
            reason = self.catalog.why_unavailable(name)
            hint = f"it is not enabled: {reason}" if reason else "see GET /v1/models"
            raise NotFound(
                f"{param}: model {name[:100]!r} is not served here ({hint})",
                param=param,
                code="model_not_found",
            )
        return spec


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
