"""Later: a request's bookkeeping that does not decide its answer (the usage ledger's record, the item and
token tallies, the cache read's histogram), run after the answer is handed to the transport, in one batch
per event-loop turn.

A cache hit's answer is written in the loop step that read its request; whatever runs before that write is
on its latency. Work queued here runs at the start of the next loop turn, before any request read after this
one (the loop runs what is ready, in order, before it reads sockets again): a client that has its answer and
then asks /metrics or the usage routes sees its counts. A scrape (Metrics.exposition) and a budget check
(usage/meter.py) run what is queued first. With several workers the tallies these jobs make reach the shared
files one loop turn later. Nothing is dropped: each job runs once, a job that raises is logged and the others
still run, and the service's close runs what is left before the usage ledger writes its last batch
(app/service.py). Outside a running loop a job runs at once. What it gains is bounded by the client: work
after the write delays a client's next request on the same connection when that request comes sooner
(bench/README.md, cache hits, seventh measurement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("embedding_gateway.later")


class Later:
    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def __call__(self, job: Callable[..., None], *args: Any) -> None:
        """`job(*args)` after this loop step (in order with the other jobs queued)."""
        self.jobs.append((job, args))
        if len(self.jobs) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.run)
            except RuntimeError:  # no loop in this thread: at once
                self.run()

    def run(self) -> None:
        """Every queued job, in order (and the ones they queue)."""
        while self.jobs:
            jobs, self.jobs = self.jobs, []
            for job, args in jobs:
                try:
                    job(*args)
                except Exception:  # one job's failure is logged; it takes no other job's count with it
                    log.exception("bookkeeping after an answer failed: %s", getattr(job, "__qualname__", job))
