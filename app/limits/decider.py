"""LimitDecider: where each limit is decided. Redis while it answers, the failure policy while it does not.

While Redis answers, every decision is Redis's: a slow reply is waited for (`limits_timeout_s`). While
Redis fails (a timeout, an error) the breaker keeps requests off it for `limits_retry_after_s` at a time,
logging once per state change. Each kind of limit then follows its policy: `local` enforces it in this
process with the limit DIVIDED by the number of live processes sharing it (the census: heartbeats in
Redis, learnt while it answered; at least REPLICAS x workers), so that together they stay within it;
`open` lets requests through; `closed` refuses them (503). A decision that reached Redis only past its
deadline every time (this process too busy, not Redis) follows the policy alone, without the breaker.
Reservations made in Redis before the failure are finished once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from ..config.settings import LimitFailurePolicy
from ..redis.bypass import Bypass
from .census import Census
from .local import LocalStore
from .pacing import Grant, Pace
from .store import LimitStore, Ticket
from .window import US, TeamQuota, Verdict

log = logging.getLogger("embedding_gateway.limits")

T = TypeVar("T")
MAX_PENDING = 10_000  # finishes waiting for Redis to come back; older ones are dropped (their leases expire)


@dataclass(slots=True)
class Decision:  # one per request: not frozen, as Verdict
    verdict: Verdict
    store: str | None  # the store holding the reservation ("redis", "local"); None: nothing to finish
    quota: TeamQuota  # the limits that were applied (divided, or fewer, while Redis fails)
    block: bool = False  # admitted from this process's block (its finish may be settled there: Ticket.block)


class LimitDecider:
    def __init__(
        self,
        shared: LimitStore | None,
        local: LocalStore,
        *,
        census: Census,
        policy: LimitFailurePolicy,
        breaker: Bypass,
    ) -> None:
        self.shared = shared
        self.local = local
        self.census = census
        census.answered = self._succeeded  # a heartbeat Redis answered: decisions are shared again
        self.policy = policy
        self.breaker = breaker
        self._pending: deque[tuple[Ticket, int]] = deque(maxlen=MAX_PENDING)
        self._flushing: asyncio.Task[None] | None = None
        self._parts: dict[TeamQuota, tuple[int, TeamQuota]] = {}  # quota -> shares, its part (divided)

    @property
    def backend(self) -> str:
        return "local" if self.shared is None else self.shared.name

    def status(self) -> dict[str, object]:
        shared = self.shared is not None and not self.breaker.is_open
        out: dict[str, object] = {"backend": self.backend, "shared": shared, "processes": self.census.live}
        if self.census.link is not None:
            out["redis"] = self.census.link.kind
            if not shared:
                out["cause"] = self.breaker.last_cause or self.census.link.down_cause
        if not shared:
            out["divided_by"] = self.shares
        return out

    @property
    def shares(self) -> int:
        return self.census.shares

    def _part(self, quota: TeamQuota) -> TeamQuota:
        """`quota` divided by the live processes, computed again only when either changed."""
        shares = self.census.shares
        known = self._parts.get(quota)
        if known is not None and known[0] == shares:
            return known[1]
        if len(self._parts) >= 1024:  # bounded: quotas come and go with reloads
            self._parts.clear()
        part = quota.divided(shares)
        self._parts[quota] = (shares, part)
        return part

    async def _shared(self, command: Callable[[], Awaitable[T]]) -> T | None:
        """The shared store's answer through the one guarded Redis call (Bypass.call; the store keeps its own
        deadlines): None while Redis is stood aside, when it fails (then stood aside) or answers late."""
        value = await self.breaker.call(command, None, timeout_s=None)
        if value is not None:
            self._flush_pending()
        return value

    def _succeeded(self) -> None:
        self.breaker.succeeded()
        self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending and self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending and (shared := self.shared) is not None:
                ticket, billed = self._pending[0]
                finished = partial(shared.finish, ticket, billed)
                if await self.breaker.call(finished, None, timeout_s=None, close=False) is None:
                    return  # stood aside or failing: the rest waits for Redis's next answer
                self._pending.popleft()
        finally:
            self._flushing = None

    async def start(self) -> None:
        """Reach Redis once at start: learn its clock, and say at once if it does not answer."""
        if self.shared is not None and not await self.shared.sync_clock():
            link = self.census.link
            self.breaker.failed((link.down_cause if link is not None else None) or "no answer at start")
        await self.census.start()

    async def admit(self, team: str, quota: TeamQuota, est: int, rid: str) -> Decision:
        shared = self.shared
        if shared is None:
            local = self._part(quota)
            return Decision(await self.local.admit(team, local, est, rid), self.local.name, local)
        if not self.breaker.is_open:  # from this process's block: no call to guard (most limited hits)
            verdict = shared.take(team, quota, est)
            if verdict is not None:
                self._flush_pending()
                return Decision(verdict, shared.name, quota, block=True)
        verdict = await self._shared(partial(shared.admit, team, quota, est, rid))
        if verdict is not None:
            return Decision(verdict, shared.name, quota)
        return await self._admit_degraded(team, quota, est, rid)

    async def _admit_degraded(self, team: str, quota: TeamQuota, est: int, rid: str) -> Decision:
        active = {kind for kind, limit in quota.by_kind().items() if limit is not None}
        policy = self.policy.model_dump()
        if any(policy[kind] == "closed" for kind in active):
            retry = round(max(self.breaker.retry_after, 1.0) * US)
            return Decision(Verdict(False, reason="unavailable", retry_us=retry), None, quota)
        enforced = quota.keep({kind for kind in active if policy[kind] == "local"})
        if not enforced.active:
            return Decision(Verdict(True), None, enforced)
        local = self._part(enforced)
        return Decision(await self.local.admit(team, local, est, rid), self.local.name, local)

    async def finish(self, ticket: Ticket, billed: int) -> tuple[int, int, int] | None:
        if ticket.store == self.local.name:
            return await self.local.finish(ticket, billed)
        if self.shared is None:
            return None
        settled = self.shared.settle(ticket, billed)  # admitted from this process's block: settled there, no call
        if settled is not None:
            return settled
        usage = await self._shared(partial(self.shared.finish, ticket, billed))
        if usage is not None:
            return usage
        self._pending.append((ticket, billed))
        return None

    async def reserve(self, account: str, pace: Pace, tokens: int, max_wait_us: int) -> Grant:
        if self.shared is None:
            return await self.local.reserve(account, pace.slower(self.shares), tokens, max_wait_us)
        grant = await self._shared(partial(self.shared.reserve, account, pace, tokens, max_wait_us))
        if grant is not None:
            return grant
        if self.policy.upstream == "open":
            return Grant(True, 0)
        if self.policy.upstream == "closed":
            return Grant(False, round(max(self.breaker.retry_after, 1.0) * US), unavailable=True)
        return await self.local.reserve(account, pace.slower(self.shares), tokens, max_wait_us)

    async def adjust(self, account: str, pace: Pace, delta_tokens: int) -> None:
        shared = self.shared
        if shared is not None:

            async def adjusted() -> bool:
                await shared.adjust(account, pace, delta_tokens)
                return True

            if await self._shared(adjusted):
                return
        if shared is None or self.policy.upstream == "local":
            await self.local.adjust(account, pace.slower(self.shares), delta_tokens)

    async def close(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
        await self.census.close()
        if self.shared is not None:
            await self.shared.close()
        await self.local.close()
