"""Guard: what every attempt on one upstream passes through: its circuit breaker (breaker.py), a bound on
the calls in flight to it, and the retry policy the fleet (fleet.py) applies between attempts: exponential
backoff with jitter, or the upstream's own `Retry-After`, within the request's deadline.

A small loop (in the fleet) rather than tenacity: the decisions that matter here are ours, not generic ones
(which deployment next, a wait that would end past the deadline is not started, gate refusals and
validation errors are never retried).

What is retried: 429, 5xx, timeouts and connection errors (UpstreamFailed). What is not: upstream 4xx
(UpstreamRejected: the same request would be refused again), refused credentials and redirects (a
deployment's configuration error: UpstreamMisconfigured), poison answers
(UpstreamInvalid: the same batch would be answered the same way, and billed again), and anything the gate
raises. What opens the breaker: consecutive failures of the upstream itself (5xx, timeouts, resets). A
429, a 4xx or a poison answer shows the upstream alive, so it counts as success.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import GatewayError, RateLimited, UpstreamFailed, UpstreamInvalid, UpstreamMisconfigured, UpstreamTimeout
from .breaker import CircuitBreaker
from .slots import FairSlots

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


# A deployment's configuration error (its key refused, its URL redirected): the same call to it would fail the
# same way, and the upstream is up. Another deployment of the model may serve the call (fleet.py).
def retryable(exc: GatewayError) -> bool:
    """Whether the same call may succeed if sent again to the same upstream."""
    if isinstance(exc, RateLimited):
        return True
    return upstream_failure(exc)


def misconfigured(exc: GatewayError) -> bool:
    """A deployment's configuration error (credentials refused, a redirect): another deployment may serve."""
    return isinstance(exc, UpstreamMisconfigured)


def upstream_failure(exc: GatewayError) -> bool:
    """Whether `exc` says the upstream itself is failing (what the breaker counts): not a poison answer or a
    configuration error, which say the upstream is up (and would open the breaker for its other models too)."""
    return isinstance(exc, UpstreamFailed) and not isinstance(exc, UpstreamInvalid | UpstreamMisconfigured)


class Guard:
    """Everything one upstream's attempts pass through: breaker, in-flight bound (shared fairly between
    requests: slots.py); and its retry policy."""

    def __init__(self, breaker: CircuitBreaker, policy: RetryPolicy, *, concurrency: int) -> None:
        self.breaker = breaker
        self.policy = policy
        self.slots = FairSlots(concurrency)

    async def attempt(self, send: Callable[[], Awaitable[T]], remaining: float, owner: int = 0) -> T | GatewayError:
        """One attempt within `remaining` seconds for request `owner`: its result, or the error it ended with
        (the breaker told of it). Raises Unavailable at once while the breaker is open."""
        probe = self.breaker.enter()
        sending = False
        try:
            async with asyncio.timeout(remaining):
                async with self.slots.held(owner):
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
