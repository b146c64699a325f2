"""LoopLag: a stall of the event loop shows in gateway_event_loop_lag_seconds as it happens."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from app.runtime.looplag import LoopLag, lag_histogram


async def test_a_stall_of_the_loop_is_observed_as_lag() -> None:
    registry = CollectorRegistry()
    lag = LoopLag(lag_histogram(registry), interval_s=0.02)
    lag.start()
    await asyncio.sleep(0.1)  # a few quiet rounds

    def count(le: str) -> float:
        return registry.get_sample_value("gateway_event_loop_lag_seconds_bucket", {"le": le}) or 0.0

    quiet = registry.get_sample_value("gateway_event_loop_lag_seconds_count") or 0.0
    assert quiet >= 2
    time.sleep(0.3)  # noqa: ASYNC251 (the point: the loop held, as by an answer parsed in one go)
    await asyncio.sleep(0.05)
    await lag.stop()
    total = registry.get_sample_value("gateway_event_loop_lag_seconds_count") or 0.0
    assert total > quiet and count("0.25") <= total - 1  # the stall: a round ended ~280 ms late
    assert (registry.get_sample_value("gateway_event_loop_lag_seconds_sum") or 0.0) >= 0.25
    await lag.stop()  # stopping twice is fine
