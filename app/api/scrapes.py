"""Scrapes: how often a process renders /metrics. Up to BURST renders at once, then one per RENDER_EVERY_S (per
format); a scrape past that gets the last rendering.

/metrics needs no key, and rendering it is the costliest answer a worker gives that does no upstream work
(~4 ms of CPU for a few teams, more with each team, model and route, and with the workers' files merged in
multiprocess mode), all of it in one step of the event loop. A client looping on it from a few connections
took the worker from every team (another client's hits: p50 2 -> 138 ms, tests/e2e/test_edge_load.py). At
Prometheus's pace (seconds apart), or a person's, every answer is fresh; only scrapes faster than ten a
second get one that is up to RENDER_EVERY_S old. The CPU /metrics can take is then a few per cent of a core,
whoever scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..metrics import Metrics

RENDER_EVERY_S = 0.1
BURST = 5.0


class Scrapes:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: dict[bool, tuple[bytes, str]] = {}  # OpenMetrics asked or not -> the last body and type
        self.renders = BURST  # renders that may be made now (a bucket: one more each RENDER_EVERY_S)
        self.counted = clock()

    def answer(self, metrics: Metrics, accept: str) -> tuple[bytes, str]:
        """The exposition for a scrape whose Accept header is `accept`, and its content type."""
        kind = "application/openmetrics-text" in accept
        now = self.clock()
        self.renders = min(BURST, self.renders + (now - self.counted) / RENDER_EVERY_S)
        self.counted = now
        last = self.last.get(kind)
        if last is not None and self.renders < 1:
            return last
        self.renders -= 1
        body, content_type = metrics.negotiate(accept)
        self.last[kind] = body, content_type
        return body, content_type
