"""Later (app/runtime/later.py): a request's counts run after its answer, in one batch per loop turn, none
lost; and the service's use of it: a whole hit's items, tokens and usage row are counted after the answer,
seen by a scrape made right after it, and written by the service's close."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from app.config.catalog import ModelSpec
from app.errors import InsufficientQuota
from app.limits.window import TeamQuota
from app.metrics import Metrics
from app.runtime.later import Later
from app.service import EmbedResult
from app.teams.team import Team
from app.usage.config import BudgetConfig
from app.usage.ledger import Ledger
from app.usage.meter import Meter
from app.usage.prices import Price
from app.usage.rows import Keys
from app.usage.store import MemoryLedger
from tests.support.misspath import miss_path
from tests.unit.test_metrics import values
from tests.unit.test_service import FakeUpstream, request


async def test_jobs_run_after_the_step_in_order_in_one_loop_callback() -> None:
    later, ran = Later(), []
    later(ran.append, 1)
    later(ran.append, 2)
    assert ran == [] and len(later.jobs) == 2  # not within the step that queued them
    await asyncio.sleep(0)
    assert ran == [1, 2] and later.jobs == []


async def test_a_job_that_raises_is_logged_and_takes_no_other_job_with_it(caplog: pytest.LogCaptureFixture) -> None:
    later, ran = Later(), []

    def broken() -> None:
        raise ValueError("no")

    later(ran.append, 1)
    later(broken)
    later(ran.append, 2)
    with caplog.at_level(logging.ERROR, "embedding_gateway.later"):
        await asyncio.sleep(0)
    assert ran == [1, 2]
    assert any("bookkeeping after an answer failed" in r.getMessage() for r in caplog.records)


async def test_a_job_queued_by_a_job_runs_in_the_same_batch() -> None:
    later, ran = Later(), []
    later(lambda: later(ran.append, "inner"))
    later.run()
    assert ran == ["inner"]


def test_without_a_running_loop_a_job_runs_at_once() -> None:
    later, ran = Later(), []
    later(ran.append, 1)
    assert ran == [1]


class Billing:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, int]] = []
        self.closed_after = -1

    def check_budget(self, team: Team | None, spec: ModelSpec) -> None:
        return None

    def record(self, team: Team | None, key_id: str, spec: ModelSpec, result: EmbedResult, billed: int) -> None:
        self.records.append((key_id, result.hits, result.hit_tokens))

    async def close(self) -> None:
        self.closed_after = len(self.records)


async def test_a_whole_hit_is_counted_after_its_answer_and_a_scrape_or_close_sees_it() -> None:
    metrics = Metrics(CollectorRegistry(), models=["m"], upstreams=["fake"])
    svc = miss_path({"fake": FakeUpstream()}, metrics)
    billing = svc.billing = Billing()
    await svc.embed(None, request(["a", "b"]))  # two misses
    await asyncio.sleep(0)
    hit = await svc.embed(None, request(["b", "a", "b"]))  # a whole hit, answered in the same step
    assert hit.hits == 3 and len(billing.records) == 1  # its counts wait for the end of the step
    saved = values(metrics.exposition(), "gateway_cache_saved_tokens_total")  # a scrape runs them first
    items = values(metrics.exposition(), "gateway_items_total")
    assert billing.records[1][:2] == ("", 3) and billing.records[1][2] > 0
    assert saved[(("model", "m"), ("team", "anonymous"))] == billing.records[1][2]
    assert items[(("cache", "hit"), ("modality", "text"), ("model", "m"))] == 3.0
    assert items[(("cache", "miss"), ("modality", "text"), ("model", "m"))] == 2.0
    await svc.embed(None, request(["a"]))
    await svc.close()  # the last answer's row before the ledger's last batch
    assert billing.closed_after == 3 and billing.records[2][1] == 1


async def test_a_budget_check_sees_the_rows_still_queued() -> None:
    spec = ModelSpec(name="m", upstream="fake", upstream_model="m", default_dimension=4,
                     price=Price(currency="CNY", per_1k_tokens=Decimal("0.0005")))  # fmt: skip
    team = Team("a", None, TeamQuota(), budget=BudgetConfig(daily=Decimal("0.001")))
    metrics = Metrics(CollectorRegistry(), teams=["a"])
    meter = Meter(Ledger(MemoryLedger(), Keys("ns", 400), flush_s=1), metrics, lambda: {"a": team}, {"CNY"})
    spent = EmbedResult(vectors=[b"x"], hits=0, misses=1, billed_tokens=2000, upstream_items=1,
                        counts={("text", "miss"): 1})  # fmt: skip
    metrics.later(meter.record, team, "key_1", spec, spent, 2000)  # CNY 0.001: the day's budget, not yet counted
    with pytest.raises(InsufficientQuota):
        meter.check_budget(team, spec)
