"""Upstream quotas: each deployment's account quota of requests and tokens per minute for its model
(DeploymentSpec.rpm/tpm in the catalog; the account is `upstream:upstream_model`), shared by every
replica. The fleet (upstreams/fleet.py) asks `try_admit` before every upstream call: the call gets the
next slot of that account's quota (pacing.reserve) and sleeps until it; asked not to wait, it learns how
far away the next slot is (nothing reserved), so that a deployment with headroom can take the call
instead; a slot more than `upstream_queue_s` away is refused with 429. The upstream therefore never sees a
burst above its quota from us, and our clients get a clean 429 with Retry-After instead.

Fair between requests: the slots are handed out in the order calls ask for them, so a request of 2,048 new
texts (about 200 calls, all asking at once) would book the quota seconds ahead and every later request of
any team would wait behind all of it. So in each process at most BOOKED_AHEAD calls per account hold a
booked slot they are still waiting for; the others wait for their turn in a queue per request, served in
turn (upstreams/slots.py, as the upstream's calls in flight are), and book only then. A later request
waits for at most the calls already booked plus one call of each request ahead of it; the quota's pace
stays full (each booking is made as the one before it starts). A call waits for its turn and its slot
together for at most `upstream_queue_s`, then gets 429.

What each request was charged, per account, is kept in a ledger (a context variable, seen by the flights'
tasks), so that once the upstream reports its bill the difference is corrected (`ledger(...)` around the
work).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType

from ..config.catalog import ModelSpec
from ..errors import RateLimited, Unavailable
from ..metrics import Metrics
from ..upstreams.slots import FairSlots
from .decider import LimitDecider
from .pacing import Pace
from .window import US

BOOKED_AHEAD = 4  # per account and process: calls holding a booked slot they wait for (enough to keep the pace
# full across a Redis round trip; each one more is a call a later request may wait behind)


@dataclass(slots=True)
class Ledger:
    """Around one request's work (`async with quota.ledger(spec, team) as ledger`): set `.billed`, and
    the token bill of the accounts charged is corrected on exit. Inert for a model without a quota."""

    quota: UpstreamQuota
    active: bool
    team: str | None
    charges: dict[str, tuple[Pace, int]] = field(default_factory=dict)  # account -> (pace, estimated tokens)
    billed: int | None = None  # the upstream's bill, once known
    token: Token[Ledger | None] | None = None

    def charge(self, account: str, pace: Pace, tokens: int) -> None:
        self.charges[account] = pace, self.charges.get(account, (pace, 0))[1] + tokens

    async def __aenter__(self) -> Ledger:
        if self.active:
            self.token = _LEDGER.set(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.token is None:
            return
        _LEDGER.reset(self.token)
        charged = sum(tokens for _, tokens in self.charges.values())
        if not charged or self.billed is None:
            return
        for account, (pace, tokens) in self.charges.items():  # the bill shared by what each account was charged
            if pace.token_us:
                await self.quota.limits.adjust(account, pace, round(self.billed * tokens / charged) - tokens)


_LEDGER: ContextVar[Ledger | None] = ContextVar("embedding_gateway_quota_ledger", default=None)


def account(upstream: str, upstream_model: str) -> str:
    """Quotas belong to the upstream account and its model: public names that share both share one quota."""
    return f"{upstream}:{upstream_model}"


class UpstreamQuota:
    """The quota gate of the fleet (upstreams/fleet.py QuotaGate)."""

    def __init__(
        self, limits: LimitDecider, metrics: Metrics, *, window_s: float, slack_s: float, max_wait_s: float
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.window_s = window_s
        self.slack_s = slack_s
        self.max_wait_us = round(max_wait_s * US)
        self._paces: dict[tuple[int | None, int | None], Pace | None] = {}
        self._turns: dict[str, FairSlots] = {}  # per account: the calls that may book now, in turn per request

    def pace(self, rpm: int | None, tpm: int | None) -> Pace | None:
        if (rpm, tpm) not in self._paces:
            self._paces[rpm, tpm] = Pace.of(rpm, tpm, self.window_s, self.slack_s)
        return self._paces[rpm, tpm]

    async def try_admit(
        self, account: str, rpm: int | None, tpm: int | None, tokens: int, *, wait: bool, owner: int = 0
    ) -> float | None:
        """Take the account's next slot and sleep until it: None. With `wait=False` and no slot now, the
        seconds until one (nothing taken). A call of request `owner` waits for its turn to book (module
        docstring); a slot further than `upstream_queue_s`, turn included: RateLimited."""
        pace = self.pace(rpm, tpm)
        if pace is None:
            return None
        if not wait:  # takes a slot only if one is free now: never ahead of a call waiting for its turn
            return await self._book(account, pace, tokens, 0)
        turns = self._turns.setdefault(account, FairSlots(BOOKED_AHEAD))
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            async with asyncio.timeout(self.max_wait_us / US):
                await turns.acquire(owner)
        except TimeoutError:
            raise self._booked_ahead(account, self.max_wait_us / US) from None
        try:
            waited_us = round((loop.time() - asked) * US)
            return await self._book(account, pace, tokens, max(self.max_wait_us - waited_us, 0), wait=True)
        finally:
            turns.release()

    def _booked_ahead(self, account: str, retry_after: float) -> RateLimited:
        """The refusal of a call whose slot would be further ahead than `upstream_queue_s` (counted)."""
        self._refused(account)
        return RateLimited(
            f"the upstream quota of {account} is booked for more than {self.max_wait_us / US:g}s ahead",
            retry_after=retry_after,
        )

    async def _book(
        self, account: str, pace: Pace, tokens: int, max_wait_us: int, *, wait: bool = False
    ) -> float | None:
        grant = await self.limits.reserve(account, pace, tokens, max_wait_us)
        if not grant.ok:
            if not wait and not grant.unavailable:
                return max(grant.wait_us / US, 1e-6)
            if grant.unavailable:
                self._refused(account)
                raise Unavailable("upstream quotas cannot be checked right now; retry shortly", retry_after=1.0)
            raise self._booked_ahead(account, grant.wait_us / US)
        ledger = _LEDGER.get()
        if ledger is not None:
            ledger.charge(account, pace, tokens)
        if grant.wait_us > 0:
            await asyncio.sleep(grant.wait_us / US)
        return None

    def _refused(self, account: str) -> None:
        ledger = _LEDGER.get()
        self.metrics.ratelimit_rejections.labels(self.metrics.team(ledger.team if ledger else None), "upstream").inc()

    def ledger(self, spec: ModelSpec, team: str | None) -> Ledger:
        active = any(self.pace(d.rpm, d.tpm) is not None for d in spec.deployments)
        return Ledger(self, active, team)
