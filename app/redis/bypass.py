"""Bypass: stands a failing dependency (a Redis) aside for a while, logging once per state change.

Shared by the vector cache, the leases and the rate limits; each has its own instance and `target` name.
Not the upstreams' circuit breaker (upstreams/breaker.py): that one counts consecutive failures and probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..metrics import Metrics
from .cause import cause
from .link import FAILURES

T = TypeVar("T")

log = logging.getLogger("embedding_gateway.breaker")


class Failing(Exception):
    """Raised by a command that judged Redis failing itself (its message names the cause): Bypass.call then
    stands Redis aside as for a Redis error. `late`: Redis answered, but every time past this process's
    deadline (this process is slow, not Redis): the call answers its fallback and Redis stays in use."""

    late = False


class Bypass:
    """Open for `retry_after` seconds after a failure; logs once per state change, never per request."""

    def __init__(
        self, target: str, retry_after: float, metrics: Metrics | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.target = target
        self.retry_after = retry_after
        self.metrics = metrics
        self.clock = clock
        self._open_until = 0.0
        self._open = False
        self.last_cause: str | None = None  # what the last failure was (for /readyz), while open
        if metrics:
            metrics.breaker_open.labels(target).set(0)  # the series exists (closed) from the start
            metrics.redis_shared.labels(target).set(1)

    @property
    def is_open(self) -> bool:
        """Stood aside since the last failure (until a call succeeds again)."""
        return self._open

    @property
    def allows(self) -> bool:
        return not self._open or self.clock() >= self._open_until

    def failed(self, what: str) -> None:
        self._open_until = self.clock() + self.retry_after
        self.last_cause = what
        if not self._open:
            self._open = True
            log.warning("%s unavailable (%s); bypassing it for %.1fs at a time", self.target, what, self.retry_after)
            if self.metrics:
                self.metrics.breaker_open.labels(self.target).set(1)
                self.metrics.redis_shared.labels(self.target).set(0)

    def succeeded(self) -> None:
        if self._open:
            self._open = False
            self.last_cause = None
            log.warning("%s available again", self.target)
            if self.metrics:
                self.metrics.breaker_open.labels(self.target).set(0)
                self.metrics.redis_shared.labels(self.target).set(1)

    async def call(
        self,
        command: Callable[[], Awaitable[T]],
        fallback: T,
        *,
        timeout_s: float | None,
        failed: Callable[[], None] | None = None,
        close: bool = True,
    ) -> T:
        """The one guarded Redis call: `command()` within `timeout_s` (None: the command keeps its own
        deadlines) while not stood aside, else `fallback`. A timeout, a Redis error or Failing calls `failed`
        (its error counter), stands Redis aside (naming the cause) and answers `fallback` (a late Failing
        only answers `fallback`); a success closes the bypass (unless `close` is False: a caller whose
        successes say nothing of the others' commands)."""
        if not self.allows:
            return fallback
        try:
            if timeout_s is None:  # the command's own deadlines (the limits' scripts: ~1 a request)
                value = await command()
            else:
                async with asyncio.timeout(timeout_s):  # not wait_for: that runs the command in a task of its own
                    value = await command()
        except FAILURES as exc:
            what = cause(exc)
        except Failing as exc:
            if exc.late:
                return fallback
            what = str(exc)
        else:
            if close:
                self.succeeded()
            return value
        if failed is not None:
            failed()
        self.failed(what)
        return fallback
