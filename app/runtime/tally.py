"""Tally: the hot path's metric updates, applied to prometheus-client once per event-loop turn (several
workers), or when /metrics is read (one process)."""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

SUM = -1  # where a histogram series' entry keeps the sum of the turn's observations


class Tally:
    """The hot path's metric updates, kept in plain dicts and applied to prometheus-client at once
    (prometheus-client takes a lock, and in multiprocess mode writes a file, on every update: about a
    microsecond each, and a cache hit makes ten). A counter (or gauge) series' value gets the sum of the
    increments at once; a histogram series the count per bucket observed (only those) and their sum, applied
    to its buckets and sum the way its `observe` does (prometheus-client's own values: `_value`, `_buckets`,
    `_sum`, `_upper_bounds`; tests/unit/test_metrics.py checks the exposition against its own updates).

    When: /metrics flushes first, so a scrape sees every update made before it. With several workers
    (`per_turn`) a scrape of one worker reads the others' files, so each worker also flushes at the end of
    every event-loop turn that made an update: what a worker answered is in its file before any later
    scrape. In one process nothing but /metrics reads the registry: the updates wait for it (a dict entry
    per series, whatever the traffic) and the loop turns pay no flush. Exemplars are not kept here: an
    observation with one goes to prometheus-client at once. A histogram's sum is added up here before it is
    added to the series', so it may differ from the sum of the same observations made one by one in its last
    bits (float addition in another order); counts and buckets are exact."""

    def __init__(self, *, per_turn: bool = True) -> None:
        self.counts: dict[Any, float] = {}
        self.buckets: dict[Any, dict[int, float]] = {}  # histogram series -> {bucket: count, SUM: sum}
        self.scrape_only = not per_turn
        self.pending = self.scrape_only  # True: no flush to schedule (one is scheduled, or only a scrape flushes)

    def inc(self, series: Any, amount: float = 1.0) -> None:
        """`series.inc(amount)`, within the loop turn (a gauge's `dec(n)` is `inc(series, -n)`)."""
        self.counts[series] = self.counts.get(series, 0.0) + amount
        if not self.pending:
            self._schedule()

    def observe(self, series: Any, value: float) -> None:
        """`series.observe(value)` for a histogram series, within the loop turn."""
        counts = self.buckets.get(series)
        if counts is None:
            counts = self.buckets[series] = {SUM: 0.0}
        bucket = bisect.bisect_left(series._upper_bounds, value)  # the first bound >= value, as observe()
        counts[bucket] = counts.get(bucket, 0.0) + 1
        counts[SUM] += value
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
        self.counts, self.buckets, self.pending = {}, {}, self.scrape_only
        for series, amount in counts.items():  # the series' value, as its inc() updates it
            if amount:
                series._value.inc(amount)
        for series, per_bucket in buckets.items():
            series._sum.inc(per_bucket.pop(SUM))
            values = series._buckets
            for bucket, n in per_bucket.items():
                values[bucket].inc(n)
