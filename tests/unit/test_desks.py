"""A team's management requests at once in a process (app/limits/desks.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.config.settings import Settings
from app.errors import RateLimited
from app.limits.desks import Desks
from app.metrics import Metrics
from app.wiring.parts import desks_of


def rejections(metrics: Metrics, team: str, kind: str = "management") -> float:
    return metrics.ratelimit_rejections.labels(metrics.team(team), kind)._value.get()


def test_a_team_holds_its_desks_and_no_other_team_s() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.add_teams(["alpha", "beta"])
    desks, _ = desks_of(Settings(management_concurrency=2), metrics)
    first, second = desks.take("alpha"), desks.take("alpha")
    with pytest.raises(RateLimited) as refused:
        desks.take("alpha")
    assert refused.value.retry_after == 1.0 and "management_concurrency" in str(refused.value)
    assert rejections(metrics, "alpha") == 1
    beta = desks.take("beta")  # another team's are its own
    first()
    third = desks.take("alpha")  # one came back
    with pytest.raises(RateLimited):
        desks.take("alpha")
    for give in (second, third, beta):
        give()
    assert desks.busy == {}  # a team without requests in progress is not kept


def test_a_desk_given_back_twice_counts_once() -> None:
    desks = Desks(1, Metrics(CollectorRegistry()), kind="transfers", what="downloads", setting="transfer_concurrency")
    give = desks.take("alpha")
    give()
    give()
    again = desks.take("alpha")
    with pytest.raises(RateLimited) as refused:
        desks.take("alpha")
    assert "1 downloads of the team" in str(refused.value) and "(transfer_concurrency)" in str(refused.value)
    assert rejections(desks.metrics, "alpha", "transfers") == 1
    again()
    assert desks.busy == {}
