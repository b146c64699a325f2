"""Upstream quotas: the account's requests and tokens per minute for each upstream model (ModelSpec.rpm,
ModelSpec.tpm), shared by every replica. The service awaits `admit` before every upstream call: the call
gets the next slot of the quota (window.reserve) and sleeps until it, in arrival order, or is refused at
once with 429 when the next slot is more than `upstream_queue_s` away. The upstream therefore never sees
a burst above its quota from us, and our clients get a clean 429 with Retry-After instead of its errors.

What each request was charged is kept in a ledger (a context variable, seen by the service's tasks), so
that once the upstream reports its bill the difference is corrected (`ledger(...)` around the work).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType

from ..catalog import ModelSpec
from ..errors import RateLimited, Unavailable
from ..metrics import Metrics
from .failover import Limits
from .window import US, Pace


@dataclass(slots=True)
class Ledger:
    """Around one request's work (`async with quota.ledger(spec, team) as ledger`): set `.billed`, and
    the quota's token bill is corrected on exit. Inert for a model without a quota."""

    quota: UpstreamQuota
    spec: ModelSpec
    pace: Pace | None
    team: str | None
    tokens: int = 0  # estimated tokens the quota charged for this request's upstream calls
    billed: int | None = None  # the upstream's bill, once known
    token: Token[Ledger | None] | None = None

    async def __aenter__(self) -> Ledger:
        if self.pace is not None:
            self.token = _LEDGER.set(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.token is None:
            return
        _LEDGER.reset(self.token)
        pace = self.pace
        if pace is not None and pace.token_us and self.tokens and self.billed is not None:
            await self.quota.limits.adjust(account(self.spec), pace, self.billed - self.tokens)


_LEDGER: ContextVar[Ledger | None] = ContextVar("embedding_gateway_quota_ledger", default=None)


def account(spec: ModelSpec) -> str:
    """Quotas belong to the upstream account and its model: public names that share both share one quota."""
    return f"{spec.upstream}:{spec.upstream_model}"


class UpstreamQuota:
    """The UpstreamGate of the upstream caller (app/upstreams/caller.py)."""

    def __init__(self, limits: Limits, metrics: Metrics, *, window_s: float, slack_s: float, max_wait_s: float) -> None:
        self.limits = limits
        self.metrics = metrics
        self.window_s = window_s
        self.slack_s = slack_s
        self.max_wait_us = round(max_wait_s * US)
        self._paces: dict[str, Pace | None] = {}

    def pace(self, spec: ModelSpec) -> Pace | None:
        if spec.name not in self._paces:
            self._paces[spec.name] = Pace.of(spec.rpm, spec.tpm, self.window_s, self.slack_s)
        return self._paces[spec.name]

    async def admit(self, spec: ModelSpec, items: int, tokens: int) -> None:
        pace = self.pace(spec)
        if pace is None:
            return
        grant = await self.limits.reserve(account(spec), pace, tokens, self.max_wait_us)
        ledger = _LEDGER.get()
        if not grant.ok:
            team = self.metrics.team(ledger.team if ledger else None)
            self.metrics.ratelimit_rejections.labels(team, "upstream").inc()
            if grant.unavailable:
                raise Unavailable("upstream quotas cannot be checked right now; retry shortly", retry_after=1.0)
            raise RateLimited(
                f"the upstream quota of model {spec.name} is booked for more than {self.max_wait_us / US:g}s ahead",
                retry_after=grant.wait_us / US,
            )
        if ledger is not None:
            ledger.tokens += tokens
        if grant.wait_us > 0:
            await asyncio.sleep(grant.wait_us / US)

    def ledger(self, spec: ModelSpec, team: str | None) -> Ledger:
        return Ledger(self, spec, self.pace(spec), team)
