"""Guard: what every call to one upstream passes through: retries with exponential backoff and jitter within
a per-request deadline, its circuit breaker (breaker.py), and a bound on the calls in flight to it.

A small loop rather than tenacity: the decisions that matter here are ours, not generic ones. A wait is
the upstream's own `Retry-After` when it sent one, else the backoff; a wait that would end past the
deadline is not started (the client gets the error at once, with its Retry-After); every attempt passes
the breaker and the upstream quota gate first; and gate refusals or validation errors are never retried.
Expressed in tenacity, that is a custom wait, stop, retry predicate and before-hook around ~30 lines of
logic, plus a dependency; the loop below is easier to read and to test with an injected clock and sleep.

What is retried: 429, 5xx, timeouts and connection errors (UpstreamFailed). What is not: upstream 4xx
(UpstreamRejected: the same request would be refused again), refused credentials, poison answers
(UpstreamInvalid: the same batch would be answered the same way, and billed again), and anything the gate
raises. What opens the breaker: consecutive failures of the upstream itself (5xx, timeouts, resets). A
429, a 4xx or a poison answer shows the upstream alive, so it counts as success.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import GatewayError, RateLimited, UpstreamFailed, UpstreamInvalid, UpstreamTimeout
from .breaker import CircuitBreaker

log = logging.getLogger("embedding_gateway.resilience")

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Every value comes from the settings (retry_attempts, retry_base_s, retry_max_s)."""

    attempts: int
    base_s: float
    cap_s: float

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number `retry` (0-based): exponential, capped, half of it jittered."""
        ceiling = min(self.cap_s, self.base_s * 2.0**retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retryable(exc: GatewayError) -> bool:
    """Whether the same call may succeed if sent again to the same upstream."""
    if isinstance(exc, RateLimited):
        return True
    return isinstance(exc, UpstreamFailed) and not isinstance(exc, UpstreamInvalid) and exc.code != "upstream_auth"


def upstream_failure(exc: GatewayError) -> bool:
    """Whether `exc` says the upstream itself is failing (what the breaker counts): not a poison answer,
    which says the upstream is up (and would open the breaker for its other models too)."""
    return isinstance(exc, UpstreamFailed) and not isinstance(exc, UpstreamInvalid) and exc.code != "upstream_auth"


class Guard:
    """Everything one upstream's calls pass through: breaker, in-flight bound, deadline, retries."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        *,
        concurrency: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.breaker = breaker
        self.policy = policy
        self.slots = asyncio.Semaphore(concurrency)
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()

    async def run(self, send: Callable[[], Awaitable[T]], admit: Callable[[], Awaitable[None]], deadline: float) -> T:
        """`send` until it succeeds, a non-retryable error, the attempts run out, or the deadline
        (a `time.monotonic()` instant) would pass. `admit` runs immediately before every attempt."""
        name = self.breaker.name
        attempt = 0
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise UpstreamTimeout(f"upstream {name} did not answer within the request deadline")
            error = await self._attempt(send, admit, remaining)
            if not isinstance(error, GatewayError):
                return error
            attempt += 1
            if not retryable(error) or attempt >= self.policy.attempts:
                raise error
            hint = error.upstream_retry_after
            delay = hint if hint is not None else self.policy.backoff(attempt - 1, self.rng)
            if self.clock() + delay >= deadline:
                raise error
            await self.sleep(delay)

    async def _attempt(
        self, send: Callable[[], Awaitable[T]], admit: Callable[[], Awaitable[None]], remaining: float
    ) -> T | GatewayError:
        probe = self.breaker.enter()
        sending = False
        try:
            async with asyncio.timeout(remaining):
                async with self.slots:
                    await admit()
                    sending = True
                    result = await send()
        except TimeoutError:
            error: GatewayError = UpstreamTimeout(f"upstream {self.breaker.name} did not answer within the deadline")
            if not sending:
                self.breaker.abandoned(probe)
                raise error from None
        except GatewayError as exc:
            if not sending:
                self.breaker.abandoned(probe)
                raise
            error = exc
        except BaseException:
            self.breaker.abandoned(probe)
            raise
        else:
            self.breaker.succeeded(probe)
            return result
        if upstream_failure(error):
            self.breaker.failed(probe)
        else:
            self.breaker.succeeded(probe)
        return error
