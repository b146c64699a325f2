"""The usage ledger's logic without processes: prices in nanos, batches applied at most once, the spend
budgets read, the report's shapes and its refusals (in the in-process store)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from app.errors import InvalidRequest
from app.usage.ledger import Ledger
from app.usage.prices import Price, amount
from app.usage.report import Reader, costs_page, parse_query, usage_page
from app.usage.rows import Keys, Usage, key_id, month_end_s, month_of
from app.usage.store import MemoryLedger

T0 = 1_798_761_600  # 2027-01-01 00:00 UTC (after the real now: the stores expire keys on the real clock)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_money_is_exact_in_nanos() -> None:
    cny = Price(currency="CNY", per_1k_tokens=Decimal("0.0005"))
    assert cny.nanos(1) == 500 and cny.nanos(1_000_000) == 500_000_000 and amount(cny.nanos(3)) == 0.0000015
    usd = Price(currency="USD", per_1k_tokens=Decimal("0.00002"), per_image=Decimal("0.001"))
    assert usd.nanos(7, images=2) == 7 * 20 + 2 * 1_000_000
    assert sum(cny.nanos(3) for _ in range(1000)) == cny.nanos(3000)  # no drift, whatever the traffic


def test_key_ids_are_short_stable_and_not_the_hash() -> None:
    h = "sha256:" + "ab" * 32
    assert key_id(h) == key_id(h) and key_id(h).startswith("key_") and len(key_id(h)) == 16
    assert key_id(h)[4:] not in h


def test_months() -> None:
    assert month_of(T0 // 86400) == 202701 and month_of(T0 // 86400 - 1) == 202612
    assert month_end_s(202701) == T0 + 31 * 86400 and month_end_s(202612) == T0


def usage(team: str = "a", tokens: int = 10, hits: int = 0, model: str = "m") -> Usage:
    return Usage(team, "key_1", model, 2, hits, tokens, 3 * hits, "CNY", tokens * 500, 3 * hits * 500)


def test_a_batch_sent_again_is_applied_once() -> None:
    async def run() -> None:
        store, clock = MemoryLedger(), Clock(T0 + 10)
        ledger = Ledger(store, Keys("t", 400), flush_s=1, clock=clock)
        ledger.record(usage())
        ledger.record(usage(hits=1))
        await ledger.flush()
        seq_key = ledger.keys.seq(ledger.process)
        hour = ledger.keys.hour(T0)[0]
        assert store.hashes[hour]["a|key_1|requests|m"] == 2 and store.hashes[hour]["a|key_1|tokens|m"] == 20
        # The same batch number again (a lost reply): nothing changes.
        await store.apply(seq_key, 1, {hour: 0}, [(hour, "a|key_1|requests|m", 5)], [])
        assert store.hashes[hour]["a|key_1|requests|m"] == 2
        assert store.hashes[ledger.keys.day(T0 // 86400)[0]]["a|CNY"] == 20 * 500

    asyncio.run(run())


class Failing(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.fail, self.lost_reply = False, False

    async def apply(self, *args: object, **kw: object) -> list[int]:
        if self.fail:
            raise ConnectionError("down")
        out = await super().apply(*args, **kw)  # type: ignore[arg-type]
        if self.lost_reply:
            self.lost_reply = False
            raise TimeoutError("the reply was lost")
        return out


def test_failures_keep_the_batch_and_a_lost_reply_never_counts_twice() -> None:
    async def run() -> None:
        store, clock = Failing(), Clock(T0 + 10)
        ledger = Ledger(store, Keys("t", 400), flush_s=1, clock=clock)
        ledger.record(usage())
        store.fail = True
        await ledger.flush()
        ledger.record(usage())
        store.fail, store.lost_reply = False, True
        await ledger.flush()  # batch 1 landed, its reply lost: it stays pending
        assert ledger.pending is not None
        await ledger.flush()  # sent again: skipped by its number
        await ledger.flush()  # then batch 2
        hour = ledger.keys.hour(T0)[0]
        assert store.hashes[hour]["a|key_1|requests|m"] == 2

    asyncio.run(run())


def test_spent_counts_the_store_and_what_this_process_has_not_written() -> None:
    async def run() -> None:
        store, clock = MemoryLedger(), Clock(T0 - 5)
        other = Ledger(store, Keys("t", 400), flush_s=1, clock=clock)  # another replica
        mine = Ledger(store, Keys("t", 400), flush_s=1, clock=clock)
        mine.budgets = lambda: [("a", "CNY")]
        other.record(usage(tokens=100))
        await other.flush()
        mine.record(usage(tokens=10))
        assert mine.spent("a", "CNY") == (10 * 500, 10 * 500)  # the other replica's batch not read back yet
        await mine.flush()
        assert mine.spent("a", "CNY") == (110 * 500, 110 * 500)
        clock.now += 10  # the next UTC day and month (2027-01-01)
        assert mine.spent("a", "CNY") == (0, 0)
        mine.record(usage(tokens=1))
        assert mine.spent("a", "CNY") == (500, 500)

    asyncio.run(run())


def params(**kw: str | list[str]) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in kw.items()}


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "x"}, "start_time"),
        ({"start_time": "10", "end_time": "5"}, "end_time"),
        ({"start_time": "0", "bucket_width": "1w"}, "bucket_width"),
        ({"start_time": "0", "limit": "32"}, "limit"),
        ({"start_time": "0", "bucket_width": "1h", "limit": "169"}, "limit"),
        ({"start_time": "0", "group_by": "user_id"}, "group_by"),
        ({"start_time": "0", "page": "nope"}, "page"),
    ],
)
def test_bad_queries_name_the_parameter(kw: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_query(params(**kw), now=T0)
    assert err.value.param == param


def test_report_shapes_groups_filters_and_pages() -> None:
    async def run() -> None:
        store, clock = MemoryLedger(), Clock(T0 + 10)
        ledger = Ledger(store, Keys("t", 400), flush_s=1, clock=clock)
        ledger.record(usage("a", 10))
        ledger.record(usage("b", 4, hits=1, model="n"))
        clock.now += 86400
        ledger.record(usage("a", 1))
        await ledger.flush()
        reader = Reader(store, ledger.keys)
        q, first = parse_query(params(start_time=str(T0), end_time=str(T0 + 3 * 86400), limit="2",
                                      group_by=["project_id", "model"]), now=T0)  # fmt: skip
        buckets, nxt = await reader.buckets(q, first, ["project_id", "model"])
        page = usage_page(q, buckets, nxt)
        assert page["has_more"] is True and page["next_page"] == f"page_{T0 + 2 * 86400}"
        day1 = page["data"][0]  # type: ignore[index]
        assert (day1["start_time"], day1["end_time"]) == (T0, T0 + 86400)
        a, b = day1["results"]
        assert a["project_id"] == "a" and a["input_tokens"] == 10 and a["num_model_requests"] == 1 and a["model"] == "m"
        assert b["cache_hits"] == 1 and b["cache_saved_input_tokens"] == 3 and b["api_key_id"] is None
        q2, first2 = parse_query(params(start_time=str(T0), end_time=str(T0 + 3 * 86400), page=page["next_page"],
                                        project_ids="b"), now=T0)  # fmt: skip
        rest, nxt2 = await reader.buckets(q2, first2, [])
        assert nxt2 is None and [r for _, t in rest for r in t.values()] == []  # b had nothing on day 3
        q3, f3 = parse_query(params(start_time=str(T0), group_by="project_id"), now=T0 + 86400, costs=True)
        costs = costs_page(q3, *(await reader.buckets(q3, f3, ["project_id"])))
        first_day = costs["data"][0]["results"]  # type: ignore[index]
        assert first_day[0]["amount"] == {"value": 10 * 500 / 1e9, "currency": "cny"}
        assert first_day[1]["cache_saved_amount"] == {"value": 3 * 500 / 1e9, "currency": "cny"}

    asyncio.run(run())


def test_rows_waiting_are_bounded_and_existing_rows_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.usage.ledger.MAX_ROWS", 2)
    ledger = Ledger(MemoryLedger(), Keys("t", 400), flush_s=1, clock=Clock(T0 + 10))
    ledger.record(usage("a"))
    ledger.record(usage("b"))
    ledger.record(usage("c"))  # a third row while two wait: not counted (and logged once)
    ledger.record(usage("a"))  # an existing row still counts
    assert ledger.dropped == 1 and len(ledger.current.rows) == 2
    assert ledger.current.rows[(T0, "a", "key_1", "m")]["requests"] == 2
