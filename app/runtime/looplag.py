"""LoopLag: how late the event loop runs what is due, the wait every request of the process shares.

A timer of its own sleeps INTERVAL_S again and again; how much later than due each sleep ends is how long
whatever was ready then (requests' reads, writes, answers) waited behind other work: a large answer parsed
in one go, a long computation, a blocking call. Each is observed in `gateway_event_loop_lag_seconds`, a
histogram per worker: its p99 stays at a few milliseconds on a healthy worker; a stall shows there as it
happens, before clients' latencies say so (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Histogram

INTERVAL_S = 0.25
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def lag_histogram(r: CollectorRegistry) -> Histogram:
    return Histogram(
        "gateway_event_loop_lag_seconds",
        f"How late a worker's event loop ran a timer due every {INTERVAL_S} s: what every request waited then",
        buckets=BUCKETS,
        registry=r,
    )


class LoopLag:
    def __init__(self, histogram: Histogram, interval_s: float = INTERVAL_S) -> None:
        self.histogram = histogram
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.histogram.observe(max(0.0, loop.time() - due))
