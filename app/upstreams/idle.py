"""Admission of background calls (batch jobs, app/jobs/) to the upstream quota: below interactive traffic.

Interactive calls reserve the quota's slots ahead, in arrival order (limits/quota.py), and wait for them.
A background call never reserves ahead: it takes a slot only when one is free now, else sleeps until the
soonest slot (with jitter, so that the jobs of several replicas do not ask in lockstep) and asks again.
So a job only fills the gaps interactive traffic leaves; the most it can cost an interactive call is one
slot's spacing, when both ask in the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from ..errors import RateLimited
from .caller import QuotaGate
from .deployment import Deployment


async def admit_idle(
    gate: QuotaGate,
    order: list[Deployment],
    tokens: int,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
) -> Deployment:
    """The first deployment of `order` with a free slot now, waiting for one within `deadline`."""
    while True:
        soonest: float | None = None
        for d in order:
            if d.guard.breaker.refusing():
                continue
            wait = await gate.try_admit(d.account, d.rpm, d.tpm, tokens, wait=False)
            if wait is None:
                return d
            soonest = wait if soonest is None else min(soonest, wait)
        if soonest is None:  # every breaker open: the first one answers (503 at once)
            return order[0]
        pause = soonest * (1 + rng.random())
        if clock() + pause >= deadline:
            raise RateLimited("no idle upstream quota for a background call before its deadline", retry_after=pause)
        await sleep(pause)
