"""The typed state that the lifespan builds once and every route reads: one object, no globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from ..api.answer import Skeletons
from ..api.scrapes import Scrapes
from ..api.turns import Turns
from ..api.vectortext import VectorText
from ..cache.store import VectorCache
from ..config.catalog import Catalog
from ..inputs.items import TextItems
from ..inputs.media.fetcher import Fetcher
from ..jobs.parts import Jobs
from ..limits.admission import TeamLimiter
from ..limits.desks import Desks
from ..limits.quota import UpstreamQuota
from ..metrics import Metrics
from ..service import EmbeddingService
from ..teams.keys import Authenticator
from ..upstreams.fleet import Fleet
from ..usage.meter import Meter
from ..usage.report import Reader
from .budget import MemoryBudget


@dataclass(frozen=True, slots=True)
class RequestCaps:
    """What one request may hold: its body's bytes, its input items."""

    max_body_bytes: int
    max_input_items: int


@dataclass(slots=True)
class Gateway:
    caps: RequestCaps
    catalog: Catalog
    cache: VectorCache
    service: EmbeddingService
    upstreams: Fleet
    metrics: Metrics
    upstream_kinds: dict[str, str]
    auth: Authenticator
    limits: TeamLimiter
    quota: UpstreamQuota
    floats: VectorText  # the memos of served vectors' JSON text (api/vectortext.py)
    base64s: VectorText
    memory: MemoryBudget  # bodies and fetched media held at once (app/runtime/budget.py)
    meter: Meter  # the usage ledger, priced, and budgets (app/usage/); the service bills it
    reader: Reader  # the ledger read back (the usage and costs routes)
    desks: Desks  # a team's management requests at once (files, batches, tasks, usage: limits/desks.py)
    transfers: Desks  # a team's uploads and downloads at once (limits/desks.py)
    ready: bool = True
    fetcher: Fetcher | None = None  # set when media_fetch is on
    jobs: Jobs | None = None  # batch jobs (app/jobs/), with Redis only
    jobs_off: str = "batch jobs need Redis: set REDIS_URL (their state is shared by the replicas)"  # why not
    turns: Turns = field(default_factory=Turns)  # large requests take the event loop in turns (api/turns.py)
    texts: TextItems = field(default_factory=TextItems)  # the items of recent texts (inputs/items.py)
    skeletons: Skeletons = field(default_factory=Skeletons)  # the JSON of recent answers' shapes (api/answer.py)
    scrapes: Scrapes = field(default_factory=Scrapes)  # the last /metrics answers (api/scrapes.py)


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
