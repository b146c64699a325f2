"""The settings of usage and budgets, as the config file spells them."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


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
