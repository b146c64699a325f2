"""Team admission: a request's estimated tokens against its team's limits before the work, and the
correction afterwards (its tokens become what the upstream billed: cache hits are refunded)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass
from types import TracebackType

from ..errors import OverLimit, RateLimited, Unavailable
from ..metrics import Metrics
from ..teams.team import Team
from .decider import LimitDecider
from .store import Ticket
from .window import US, TeamQuota, Verdict

WHAT = {
    "requests": "requests",
    "tokens": "tokens",
    "concurrency": "concurrent requests",
    "daily_tokens": "tokens per day",
}
# DashScope's codes for what ran out (upstream-contracts.md 1.4); requests and concurrency: RateLimited's own.
DASHSCOPE_CODES = {"tokens": "Throttling.AllocationQuota", "daily_tokens": "Throttling.AllocationQuota"}


UNLIMITED = TeamQuota()
LIMIT_WAIT_S = 60.0  # the longest one wait for the team's limits at background priority (then asked again)


@dataclass(slots=True)
class Admission:
    """One request's place in its team's limits; `async with` it around the work to finish it."""

    limiter: TeamLimiter
    team: Team | None
    est: int
    verdict: Verdict | None = None  # None: nothing enforced (no team, or a team without limits)
    quota: TeamQuota = UNLIMITED  # as applied (divided while Redis fails, policy local)
    ticket: Ticket | None = None
    usage: tuple[int, int, int] | None = None  # requests, tokens and reset (us) in the window after the finish
    billed: int | None = None  # set once the upstream reported usage; a failed request keeps its estimate
    # (some of its chunks may have been billed), except a throttled one

    def enforce(self) -> None:
        """Raise the refusal, if any, for the caller's wire format."""
        v = self.verdict
        if v is None or v.ok or self.team is None:
            return
        if v.reason == "unavailable":
            raise Unavailable("rate limits cannot be checked right now; retry shortly", retry_after=v.retry_us / US)
        kind = v.reason or "requests"
        limit = self.quota.by_kind().get(kind)
        if v.too_large:
            raise OverLimit(
                f"team {self.team.name}: this request (about {self.est} tokens) is larger than the "
                f"{WHAT[kind]} limit ({limit}) and can never pass: split it",
                dashscope_code=DASHSCOPE_CODES.get(kind),
            )
        per = "" if kind in ("concurrency", "daily_tokens") else f" per {self.limiter.window_s:g}s"
        raise RateLimited(
            f"team {self.team.name}: limit of {limit} {WHAT[kind]}{per} reached; retry after the Retry-After delay",
            retry_after=v.retry_us / US,
            dashscope_code=DASHSCOPE_CODES.get(kind),
        )

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, RateLimited) and self.billed is None:
            self.billed = 0  # throttled on the way (upstream quota, upstream 429): nothing was billed
        if self.ticket is not None and self.unsettled():
            await self.limiter.finish(self)

    def unsettled(self) -> bool:
        """Whether the request's reservation still needs its finish: a concurrency lease to release, or
        reserved tokens that differ from the bill. A whole cache hit (admitted with 0 tokens, billed 0) of a
        team without a concurrency limit has none: its admission was its only script call."""
        if self.quota.concurrency:  # as applied: a lease was taken
            return True
        return (self.est if self.billed is None else self.billed) != self.est


class TeamLimiter:
    def __init__(self, limits: LimitDecider, metrics: Metrics, *, window_s: float) -> None:
        self.limits = limits
        self.metrics = metrics
        self.window_s = window_s
        # A request's id in its team's leases: unique among the processes sharing them (a random prefix per
        # limiter, a counter: ~0.2 us a request against 0.9 for secrets.token_hex each time)
        self._rids = map(f"{secrets.token_hex(6)}-{{:x}}".format, itertools.count())

    def status(self) -> dict[str, object]:
        """For /readyz: where decisions are made, whether they are shared right now, and if not, why."""
        return self.limits.status()

    async def admit(self, team: Team | None, est: int) -> Admission:
        adm = Admission(self, team, est)
        if team is None or not team.quota.active:
            return adm
        rid = next(self._rids)
        decision = await self.limits.admit(team.name, team.quota, est, rid)
        verdict, store = decision.verdict, decision.store
        adm.verdict, adm.quota = verdict, decision.quota
        if verdict.ok and store is not None:
            adm.ticket = Ticket(team.name, rid, est, verdict.now_us, verdict.day, store, decision.block)
        if not verdict.ok:
            self.metrics.ratelimit_rejections.labels(self.metrics.team(team.name), verdict.reason or "other").inc()
        return adm

    async def admit_waiting(self, team: Team | None, est: int) -> Admission:
        """Background priority (batch jobs): the team's limits are waited for rather than refused. The
        admission returned is admitted, or over the limit alone (its enforce() raises OverLimit)."""
        while True:
            adm = await self.admit(team, est)
            v = adm.verdict
            if v is None or v.ok or v.too_large:
                return adm
            await asyncio.sleep(1.0 if v.reason == "unavailable" else min(LIMIT_WAIT_S, max(0.05, v.retry_us / US)))

    async def finish(self, adm: Admission) -> None:
        assert adm.ticket is not None
        billed = adm.est if adm.billed is None else adm.billed
        adm.usage = await self.limits.finish(adm.ticket, billed)
