"""The usage ledger in a real redis-server: batches applied at most once by the script, every replica's
batches summed, retention on every hash, and a team's budget across a UTC day on a fake clock."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from app.config.catalog import ModelSpec
from app.errors import InsufficientQuota
from app.limits.shared import open_client
from app.limits.window import TeamQuota
from app.metrics import Metrics
from app.service import EmbedResult
from app.teams.team import Team
from app.usage.config import BudgetConfig
from app.usage.ledger import Ledger
from app.usage.meter import Meter
from app.usage.prices import Price
from app.usage.rows import Keys, Usage
from app.usage.store import RedisLedger
from tests.support.processes import RedisServer

T0 = 1_798_761_600  # 2027-01-01 00:00 UTC: later than the real clock, which Redis expires keys by
SPEC = ModelSpec(
    name="m", upstream="dashscope", upstream_model="m", default_dimension=64,
    price=Price(currency="CNY", per_1k_tokens=Decimal("0.0005")),
)  # fmt: skip


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ledger(url: str, ns: str, clock: Clock) -> Ledger:
    return Ledger(RedisLedger(open_client(url, 2.0)), Keys(ns, 400), flush_s=1, clock=clock)


def usage(tokens: int) -> Usage:
    return Usage("a", "key_1", "m", 1, 0, tokens, 0, "CNY", tokens * 500, 0)


def test_batches_land_once_summed_over_replicas_with_retention(redis_server: RedisServer) -> None:
    async def run() -> None:
        ns, clock = "u" + uuid.uuid4().hex[:8], Clock(T0 + 30)
        one, two = ledger(redis_server.url, ns, clock), ledger(redis_server.url, ns, clock)
        for _ in range(3):
            one.record(usage(10))
        two.record(usage(5))
        await one.flush()
        await two.flush()
        store = one.store
        assert isinstance(store, RedisLedger)
        hour = one.keys.hour(T0)[0]
        # Batch 1 of process one, sent again (its reply lost): skipped by the script.
        again = await store.apply(one.keys.seq(one.process), 1, {hour: T0}, [(hour, "a|key_1|requests|m", 100)],
                                  [(hour, "a|key_1|requests|m")])  # fmt: skip
        assert again == [4]
        (row,) = await store.read([hour])
        expected = {"requests": 4, "items": 4, "tokens": 35, "cost:CNY": 17500}
        assert row == {f"a|key_1|{k}|m": v for k, v in expected.items()}
        client = store.link.client
        ttl = await client.ttl(hour)
        assert abs(ttl - (T0 + 3600 + 400 * 86400 - await now_s(client))) <= 5
        minute_ttl = await client.ttl(one.keys.minute(T0)[0])
        assert 0 < minute_ttl <= T0 + 60 + 86400 - await now_s(client) + 5
        await one.close()
        await two.close()

    asyncio.run(run())


async def now_s(client: object) -> int:
    seconds, _ = await client.time()  # type: ignore[attr-defined]
    return int(seconds)


def result(tokens: int) -> EmbedResult:
    return EmbedResult(vectors=[b"x"], hits=0, misses=1, billed_tokens=tokens, upstream_items=1,
                       counts={("text", "miss"): 1})  # fmt: skip


def test_a_spent_daily_budget_refuses_until_the_next_utc_day(redis_server: RedisServer) -> None:
    """Two replicas: one spends past the team's daily budget; the other learns it from its next batch and
    refuses; at midnight UTC (the fake clock moves) both are open again. The monthly budget stays spent."""

    async def run() -> None:
        ns, clock = "b" + uuid.uuid4().hex[:8], Clock(T0 + 86400 - 30)  # 2027-01-01 23:59:30
        team = Team("a", None, TeamQuota(), budget=BudgetConfig(daily=Decimal("0.001"), monthly=Decimal("0.0015")))
        teams = {"a": team}
        spender, other = ledger(redis_server.url, ns, clock), ledger(redis_server.url, ns, clock)
        meters = [Meter(lg, fresh_metrics(), lambda: teams, {"CNY"}) for lg in (spender, other)]
        meters[0].check_budget(team, SPEC)
        meters[0].record(team, "key_1", SPEC, result(2000), 2000)  # CNY 0.001: the day's budget
        with pytest.raises(InsufficientQuota) as refused:
            meters[0].check_budget(team, SPEC)
        assert refused.value.code == "insufficient_quota" and refused.value.dashscope_code == "Arrearage"
        assert refused.value.retry_after == 30
        meters[1].check_budget(team, SPEC)  # the other replica has not heard yet
        await spender.flush()
        await other.flush()
        with pytest.raises(InsufficientQuota):
            meters[1].check_budget(team, SPEC)
        clock.now = T0 + 86400 + 1  # the next UTC day
        for m in meters:
            m.check_budget(team, SPEC)
        meters[1].record(team, "key_1", SPEC, result(1000), 1000)  # CNY 0.0005 more: the month's 0.0015
        await other.flush()
        await spender.flush()
        with pytest.raises(InsufficientQuota) as monthly:
            meters[0].check_budget(team, SPEC)
        assert "monthly budget" in monthly.value.message
        for lg in (spender, other):
            await lg.close()

    asyncio.run(run())


def fresh_metrics() -> Metrics:  # a fresh registry per meter
    return Metrics(CollectorRegistry(), teams=["a"])
