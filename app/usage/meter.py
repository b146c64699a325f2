"""The usage of a request, priced and handed to the ledger; a team's budget checked before its misses go
upstream; the money and budget metrics. What the embedding routes and the usage routes call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal

from ..config.catalog import Catalog, ModelSpec
from ..errors import InsufficientQuota
from ..metrics import Metrics
from ..service import EmbedResult
from ..teams.team import Team
from .ledger import Ledger
from .prices import NANO, amount
from .rows import DAY_S, Usage, month_end_s, month_of


def currencies(catalog: Catalog) -> set[str]:
    return {spec.price.currency for spec in catalog if spec.price is not None}


class Meter:
    def __init__(
        self, ledger: Ledger, metrics: Metrics, teams: Callable[[], Mapping[str, Team]], currencies: set[str]
    ) -> None:
        """`currencies`: those of the catalog's prices (a budget without its own counts the one of them, or,
        when there are several, the currency of the model each request uses)."""
        self.ledger = ledger
        self.metrics = metrics
        self.teams = teams  # the current teams (they change on a reload)
        self.currencies = sorted(currencies)
        self.default_currency = self.currencies[0] if len(self.currencies) == 1 else None
        ledger.budgets = self._budget_currencies
        ledger.landed = self._export_budgets

    def currency(self, team: Team, spec: ModelSpec | None = None) -> str | None:
        assert team.budget is not None
        if team.budget.currency is not None:
            return team.budget.currency
        if self.default_currency is not None:
            return self.default_currency
        return spec.price.currency if spec is not None and spec.price is not None else None

    def _budget_currencies(self) -> list[tuple[str, str]]:
        out = []
        for name, team in self.teams().items():
            if team.budget is not None:
                currency = self.currency(team)
                out += [(name, c) for c in ([currency] if currency is not None else self.currencies)]
        return out

    def record(self, team: Team | None, key_id: str, spec: ModelSpec, result: EmbedResult, billed: int) -> None:
        """A request answered with vectors: `billed` tokens as its team's limits count them."""
        u = Usage(team.name if team else "", key_id, spec.name, len(result.vectors), result.hits, billed,
                  result.hit_tokens)  # fmt: skip
        price = spec.price
        if price is not None:
            counts = result.counts
            u.currency = price.currency
            u.cost = price.nanos(billed, counts.get(("image", "miss"), 0), counts.get(("video", "miss"), 0))
            u.saved = price.nanos(result.hit_tokens, counts.get(("image", "hit"), 0), counts.get(("video", "hit"), 0))
            m, labels = self.metrics, (self.metrics.team(u.team or None), self.metrics.model(spec.name), price.currency)
            if u.cost:
                m.tally.inc(m.child(m.usage.money_billed, *labels), amount(u.cost))
            if u.saved:
                m.tally.inc(m.child(m.usage.money_saved, *labels), amount(u.saved))
        self.ledger.record(u)

    def check_budget(self, team: Team | None, spec: ModelSpec) -> None:
        """Before a request's misses go upstream: 429 insufficient_quota (DashScope: Arrearage) when its
        team's budget of this UTC day or month is spent. Hits need no check: they cost nothing."""
        if team is None or team.budget is None or (currency := self.currency(team, spec)) is None:
            return
        self.metrics.later.run()  # the rows of answers whose counts still wait for the end of the loop turn
        day_spent, month_spent = self.ledger.spent(team.name, currency)
        now = self.ledger.clock()
        day = int(now) // DAY_S
        for period, limit, spent, ends in (
            ("daily", team.budget.daily, day_spent, (day + 1) * DAY_S),
            ("monthly", team.budget.monthly, month_spent, month_end_s(month_of(day))),
        ):
            if limit is not None and spent >= limit * NANO:
                when = dt.datetime.fromtimestamp(ends, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                raise InsufficientQuota(
                    f"team {team.name}: {period} budget of {limit} {currency} is spent ({amount(spent):.6f} "
                    f"{currency} billed); cached inputs are still served; new ones again from {when}",
                    retry_after=max(1.0, ends - now),
                )

    async def close(self) -> None:
        await self.ledger.close()

    def _export_budgets(self) -> None:
        """After each batch: every budgeted team's share spent and money left, per period (the alerts')."""
        m = self.metrics
        for name, currency in self._budget_currencies():
            budget = self.teams()[name].budget
            assert budget is not None
            spent = dict(zip(("daily", "monthly"), self.ledger.spent(name, currency), strict=True))
            for period, limit in (("daily", budget.daily), ("monthly", budget.monthly)):
                if limit is None:
                    continue
                used = Decimal(spent[period]) / NANO
                m.child(m.usage.budget_used, m.team(name), period).set(float(used / limit))
                m.child(m.usage.budget_left, m.team(name), period, currency).set(float(max(Decimal(0), limit - used)))
