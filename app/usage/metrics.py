"""The usage metrics, registered with the others (app/metrics.py holds one of these as `usage`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class UsageMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        money = ["team", "model", "currency"]
        self.money_billed = Counter("gateway_money_billed", "Money the upstreams billed (prices)", money, registry=r)
        self.money_saved = Counter("gateway_money_saved", "Money the cache saved (prices)", money, registry=r)
        self.budget_used = Gauge(
            "gateway_budget_used_ratio",
            "Share of a team's budget spent, per period (all replicas, as of the last ledger batch)",
            ["team", "period"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.budget_left = Gauge(
            "gateway_budget_left",
            "Money left in a team's budget, per period",
            ["team", "period", "currency"],
            multiprocess_mode="livemin",
            registry=r,
        )
