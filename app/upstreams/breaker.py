"""CircuitBreaker: one per upstream; opens after consecutive failures of the upstream itself, answers 503
at once while open, then lets one probe through (half-open). Logs once per state change."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import Unavailable
from ..metrics import Metrics

log = logging.getLogger("embedding_gateway.resilience")
Clock = Callable[[], float]


class CircuitBreaker:
    """closed -> (failures consecutive failures) -> open for open_s -> half-open: one probe at a time;
    the probe's success closes it, its failure opens it again. Logs once per state change."""

    def __init__(
        self, name: str, *, failures: int, open_s: float, metrics: Metrics | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.name = name
        self.threshold = failures
        self.open_s = open_s
        self.metrics = metrics
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        if metrics is not None:  # the series exists (closed) from the start
            metrics.breaker_open.labels(f"upstream:{name}").set(0)

    def enter(self) -> bool:
        """Before an attempt: raises Unavailable while open; returns True when this attempt is the probe."""
        if self.state == "closed":
            return False
        now = self.clock()
        if self.state == "open" and now >= self.open_until:
            self._set("half-open")
        if self.state == "half-open" and not self.probing:
            self.probing = True
            return True
        raise self.refusal()

    def refusal(self) -> Unavailable:
        """The 503 an attempt gets while the circuit is open (or half-open with its probe out)."""
        now = self.clock()
        wait = max(self.open_until - now, 0.0) if self.state == "open" else min(self.open_s, 1.0)
        return Unavailable(
            f"upstream {self.name} is failing; not calling it for {wait:.1f}s",
            code="upstream_unavailable",
            retry_after=max(wait, 0.001),
        )

    def refusing(self) -> bool:
        """Whether an attempt now would be refused (open, or half-open with its probe out): no side effect."""
        if self.state == "closed":
            return False
        if self.state == "open":
            return self.clock() < self.open_until
        return self.probing

    def succeeded(self, probe: bool) -> None:
        self.failures = 0
        if probe:
            self.probing = False
        if self.state != "closed":
            self._set("closed")

    def failed(self, probe: bool) -> None:
        self.failures += 1
        if probe:
            self.probing = False
        if probe or (self.state == "closed" and self.failures >= self.threshold):
            self.open_until = self.clock() + self.open_s
            self._set("open")

    def abandoned(self, probe: bool) -> None:
        """The attempt ended without a verdict (cancelled, or the gate refused it)."""
        if probe:
            self.probing = False

    def _set(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "open":
            log.warning(
                "upstream %s: circuit open after %d failures; probing in %.1fs", self.name, self.failures, self.open_s
            )
        elif state == "closed":
            log.warning("upstream %s: circuit closed, upstream answering again", self.name)
        if self.metrics is not None:
            self.metrics.breaker_open.labels(f"upstream:{self.name}").set(1 if state == "open" else 0)
