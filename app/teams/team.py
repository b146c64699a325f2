"""Teams as the gateway sees them at run time: a name, the models it may use, its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config.catalog import Catalog, ModelSpec
from ..config.settings import TeamConfig
from ..errors import Forbidden
from ..limits.window import TeamQuota
from ..usage.config import BudgetConfig

ALL_MODELS = "*"


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    models: frozenset[str] | None  # None: every model of the catalog
    quota: TeamQuota
    scope: str | None = None  # the cache scope: None shares every team's vectors (cache_scope_of)
    budget: BudgetConfig | None = None
    admin: bool = False  # its keys read every team's usage and costs

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def model_for(catalog: Catalog, team: Team | None, name: str, param: str = "model") -> ModelSpec:
    """The model `name` of `catalog` for `team` (None: auth off): 404 when it is not served, 403 when the team
    may not use it."""
    spec = catalog.served(name, param)
    if team is not None and not team.allows(spec.name):
        raise Forbidden(f"{param}: team {team.name} may not use model {spec.name}", param=param)
    return spec


def teams_from(configs: Mapping[str, TeamConfig]) -> dict[str, Team]:
    out = {}
    for name, cfg in configs.items():
        models = None if ALL_MODELS in cfg.models else frozenset(cfg.models)
        quota = TeamQuota(cfg.rpm, cfg.tpm, cfg.concurrency, cfg.daily_tokens)
        out[name] = Team(name, models, quota, cache_scope_of(name, cfg.cache_scope), cfg.budget, cfg.admin)
    return out


def cache_scope_of(team: str, scope: str) -> str | None:
    """What goes into the content key for a team's `cache_scope`: nothing for `shared` (the keys of every
    vector cached before scopes existed), `team:NAME` for `team`, `scope:NAME` for a named scope (the two
    prefixes keep a scope named like a team apart from that team's own)."""
    if scope == "shared":
        return None
    return f"team:{team}" if scope == "team" else f"scope:{scope}"


def unknown_models(configs: Mapping[str, TeamConfig], served: set[str]) -> list[str]:
    """`teams.NAME.models` entries that the catalog does not serve here (a typo, or a disabled model)."""
    return sorted(
        f"teams.{name}.models: {model}"
        for name, cfg in configs.items()
        for model in cfg.models
        if model != ALL_MODELS and model not in served
    )
