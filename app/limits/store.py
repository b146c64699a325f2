"""What a limit store does (Redis for every replica, or this process alone), and the ticket an admitted
request carries until it ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..redis.bypass import Failing
from .pacing import Grant, Pace
from .window import TeamQuota, Verdict


class StoreUnavailable(Failing):
    """The store did not decide in time (or failed): the caller applies its failure policy."""


class StoreLate(StoreUnavailable):
    """The store answers, but every attempt reached it past its deadline (charging nothing): this process is
    too slow, not the store, so this one decision follows the failure policy and the store stays in use."""

    late = True


@dataclass(slots=True)
class Ticket:
    """An admitted request's reservation: what `finish` needs to free and correct it (one per request: not
    frozen, as Verdict)."""

    team: str
    rid: str
    est: int
    at_us: int
    day: int
    store: str  # the store that admitted it: "redis" or "local"
    block: bool = False  # admitted from this process's block of the team's limits (allowance.py), without a call


class LimitStore(Protocol):
    name: str

    async def sync_clock(self) -> bool: ...

    def take(self, team: str, quota: TeamQuota, est: int) -> Verdict | None:
        """The request admitted from what this process holds of the team's limits, without a call (blocks);
        None: `admit` decides it."""
        ...

    async def admit(self, team: str, quota: TeamQuota, est: int, rid: str) -> Verdict: ...

    async def finish(self, ticket: Ticket, billed: int) -> tuple[int, int, int]: ...

    def settle(self, ticket: Ticket, billed: int) -> tuple[int, int, int] | None:
        """The finish of a request admitted from this process's block (`ticket.block`), made in that block without
        a call while its bucket lasts; None (any other request): `finish` makes it."""
        ...

    async def reserve(self, account: str, pace: Pace, tokens: int, max_wait_us: int) -> Grant: ...

    async def adjust(self, account: str, pace: Pace, delta_tokens: int) -> None: ...

    async def close(self) -> None: ...
