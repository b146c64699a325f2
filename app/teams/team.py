"""Teams as the gateway sees them at run time: a name, the models it may use, its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config.settings import TeamConfig
from ..limits.window import TeamQuota

ALL_MODELS = "*"


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    models: frozenset[str] | None  # None: every model of the catalog
    quota: TeamQuota

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def teams_from(configs: Mapping[str, TeamConfig]) -> dict[str, Team]:
    out = {}
    for name, cfg in configs.items():
        models = None if ALL_MODELS in cfg.models else frozenset(cfg.models)
        out[name] = Team(name, models, TeamQuota(cfg.rpm, cfg.tpm, cfg.concurrency, cfg.daily_tokens))
    return out


def unknown_models(configs: Mapping[str, TeamConfig], served: set[str]) -> list[str]:
    """`teams.NAME.models` entries that the catalog does not serve here (a typo, or a disabled model)."""
    return sorted(
        f"teams.{name}.models: {model}"
        for name, cfg in configs.items()
        for model in cfg.models
        if model != ALL_MODELS and model not in served
    )
