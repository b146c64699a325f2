"""The settings of usage and budgets, as the config file spells them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

AdminKeys = list[Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]]  # as teams' keys: hashes only


class BudgetConfig(BaseModel):
    """A team's spending limits, in the currency of the prices (`currency`, or its models' one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: Decimal | None = Field(default=None, gt=0, description="money billed per UTC day")
    monthly: Decimal | None = Field(default=None, gt=0, description="money billed per UTC calendar month")
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="unset: the currency of the priced model a request uses"
    )


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: int = Field(default=400, ge=1, le=3650, description="hourly rows of the ledger are kept this long")
    flush_s: float = Field(default=1.0, gt=0, le=60, description="each process writes its counts this often")


class TeamUsage(BaseModel):
    """A team's fields about money and the cache (TeamConfig adds its keys, models and limits)."""

    cache_scope: str = Field(default="shared", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="shared, team, or a name")
    budget: BudgetConfig | None = Field(default=None, description="past it, misses get 429 insufficient_quota")
    admin: bool = Field(default=False, description="the team's keys read every team's usage and costs")
