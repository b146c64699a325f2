"""UpstreamCaller: the one way down from the flights to the upstreams.

The flights (app/flights/) hand it one chunk of misses at a time (a `Batch`: model, parameters, up to the
model's batch limit of items) and get back checked vectors, rows in item order, with the tokens the
upstream billed (a `Result`), or a GatewayError. Nothing below it calls back up.

The caller the gateway wires (app/main.py) is the fleet (fleet.py): per model, its deployments, each an
adapter (dashscope.py, openai.py, local.py) behind its upstream's guard (guard.py: breaker, in-flight
bound) with its account's shared quota (`QuotaGate`) admitting every attempt just before it goes; routing,
failover and retries within the deadline; the upstream metrics counted around each attempt.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..errors import GatewayError, UpstreamTimeout
from .adapter import Batch, Result

log = logging.getLogger("embedding_gateway.upstreams")


class UpstreamCaller(Protocol):
    async def call(self, batch: Batch, deadline: float) -> Result:
        """One upstream call for `batch`, retried within `deadline` (a `time.monotonic()` instant): its
        vectors checked (count, indices, length, finite) and its billed tokens."""
        ...


class QuotaGate(Protocol):
    """What the fleet needs of the upstream quota (limits/quota.py UpstreamQuota)."""

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> float | None:
        """Take a slot and sleep until it: None (also when there is no quota); with wait=False and no
        slot now, the seconds until one (nothing taken); with wait=True, a slot within the queue budget
        (booked in turn with the other requests' calls: `owner` is the request), or RateLimited."""
        ...


class OpenGate:
    """No quotas: every call may go at once."""

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> float | None:
        return None


def upstream_status(exc: GatewayError) -> str:
    """The upstream's own HTTP status when it answered; `timeout` or `error` when no usable answer came."""
    if exc.upstream_status is not None:
        return str(exc.upstream_status)
    return "timeout" if isinstance(exc, UpstreamTimeout) else "error"
