"""Tally: the hot path's metric updates, applied to prometheus-client once per event-loop turn."""

from __future__ import annotations

import asyncio
import bisect
from typing import Any


class Tally:
    """The hot path's metric updates, kept in plain dicts and applied to prometheus-client once per event-loop
    turn (prometheus-client takes a lock, and in multiprocess mode writes a file, on every update: about a
    microsecond each, and a cache hit makes ten). A counter (or gauge) series' value gets the sum of the
    turn's increments at once; a histogram series the turn's count per bucket and their sum, applied to its
    buckets and sum the way its `observe` does (prometheus-client's own values: `_value`, `_buckets`, `_sum`,
    `_upper_bounds`; tests/unit/test_metrics.py checks the exposition against its own updates). Values reach
    the registry within one loop turn; /metrics flushes first, so a scrape sees every update made before it.
    Exemplars are not kept here: an observation with one goes to prometheus-client at once."""

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        self.buckets: dict[Any, list[float]] = {}  # histogram series -> [count per bucket..., sum]
        self.pending = False

    def inc(self, series: Any, amount: float = 1.0) -> None:
        """`series.inc(amount)`, within the loop turn (a gauge's `dec(n)` is `inc(series, -n)`)."""
        self.counts[series] = self.counts.get(series, 0.0) + amount
        if not self.pending:
            self._schedule()

    def observe(self, series: Any, value: float) -> None:
        """`series.observe(value)` for a histogram series, within the loop turn."""
        counts = self.buckets.get(series)
        if counts is None:
            counts = self.buckets[series] = [0.0] * (len(series._upper_bounds) + 1)
        counts[bisect.bisect_left(series._upper_bounds, value)] += 1  # the first bound >= value, as observe()
        counts[-1] += value
        if not self.pending:
            self._schedule()

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self.pending = True
        except RuntimeError:  # no loop in this thread: at once
            self.flush()

    def flush(self) -> None:
        counts, buckets = self.counts, self.buckets
        self.counts, self.buckets, self.pending = {}, {}, False
        for series, amount in counts.items():  # the series' value, as its inc() updates it
            if amount:
                series._value.inc(amount)
        for series, per_bucket in buckets.items():
            series._sum.inc(per_bucket[-1])
            for value, n in zip(series._buckets, per_bucket, strict=False):
                if n:
                    value.inc(n)
