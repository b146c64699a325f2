"""The arithmetic of every limit, in plain Python on an explicit clock (integer microseconds).

This module is the reference: the in-process store runs it as it is, and the Redis scripts
(`team_admit.lua`, `team_finish.lua`, `quota_reserve.lua`, `quota_adjust.lua`) take the same steps in the
same order; tests run random sequences through both and compare every decision.

Team limits (requests and tokens per window) are a **sliding-window log**: one entry per admitted request
(time, estimated then billed tokens), a running token sum, entries dropped once older than the window.
Chosen because a team reads "300 requests per minute" as "never more than 300 in any 60 seconds", which
the log gives exactly where GCRA or a token bucket admit a full burst plus the refill (up to twice the
limit in a minute); because it can correct one request's tokens after the fact (reconciling the estimate
with the upstream's bill, refunding cache hits) by rewriting that request's entry; and because its
Retry-After is exact (when the entry that frees room leaves the window). Its cost, one entry per request
in the window, is small for per-team request rates.

Upstream quotas are **GCRA with reservations** (virtual scheduling with no burst tolerance): each call gets
the next free slot, `spacing` after the previous one, and sleeps until it. Chosen because the upstream
enforces its per-minute quota per second as well (RPS = RPM / 60, with burst protection), so calls must be
paced, not bunched at the start of a minute; because handing out slots in arrival order is a FIFO queue
shared by every replica with no polling; because a slot further away than the longest allowed wait is a
bounded queue (answer 429 at once, without reserving); and because its state is two numbers.
Tokens are paid after: a call waits until the tokens of the calls before it are paid for at the quota's
rate, then adds its own, and the bill is corrected once the upstream reports real usage.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

US = 1_000_000
DAY_US = 86_400 * US
CONCURRENCY_RETRY_US = US  # a concurrency slot frees when a request ends: suggest a retry in a second
KINDS = ("requests", "tokens", "concurrency", "daily_tokens")


@dataclass(frozen=True, slots=True)
class TeamQuota:
    """A team's limits for one decision; None: not enforced."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    daily_tokens: int | None = None

    def by_kind(self) -> dict[str, int | None]:
        return {
            "requests": self.rpm,
            "tokens": self.tpm,
            "concurrency": self.concurrency,
            "daily_tokens": self.daily_tokens,
        }

    @property
    def active(self) -> bool:
        return any(v is not None for v in self.by_kind().values())

    def keep(self, kinds: set[str]) -> TeamQuota:
        """Only the named kinds stay enforced."""
        v = self.by_kind()
        return TeamQuota(*(v[k] if k in kinds else None for k in KINDS))

    def divided(self, shares: int) -> TeamQuota:
        """Each of `shares` processes enforcing alone gets its part: the sum never exceeds the limit, except
        that a limit below the number of processes still lets one request through in each."""
        return TeamQuota(*(None if v is None else max(1, v // shares) for v in self.by_kind().values()))


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None  # the kind that refused, or "unavailable" (policy closed while Redis fails)
    too_large: bool = False  # the request alone is over the limit: waiting cannot help
    retry_us: int = 0
    requests: int = 0  # in the window, this request included when admitted
    tokens: int = 0
    reset_us: int = 0  # until the oldest entry leaves the window (0: window empty)
    now_us: int = 0
    day: int = 0


@dataclass(slots=True)
class TeamWindow:
    """One team's state in one process (the Redis keys hold the same)."""

    log: deque[tuple[int, str]] = field(default_factory=deque)  # (admitted at, request id), oldest first
    weight: dict[str, int] = field(default_factory=dict)  # request id -> tokens (estimate, then billed)
    tokens: int = 0
    leases: dict[str, int] = field(default_factory=dict)  # request id -> expires at
    day: int = -1
    day_used: int = 0


def _expire(w: TeamWindow, now: int, window: int) -> None:
    cutoff = now - window
    while w.log and w.log[0][0] <= cutoff:
        _, rid = w.log.popleft()
        w.tokens -= w.weight.pop(rid, 0)
    if not w.log:
        w.tokens = 0
    for rid in [r for r, until in w.leases.items() if until <= now]:
        del w.leases[rid]


def _requests_retry(w: TeamWindow, rpm: int, now: int, window: int) -> int:
    # The (count - rpm + 1)-th oldest entry must leave the window.
    return w.log[len(w.log) - rpm][0] + window - now


def _tokens_retry(w: TeamWindow, need: int, now: int, window: int) -> int:
    freed = 0
    for t, rid in w.log:
        freed += w.weight.get(rid, 0)
        if freed >= need:
            return t + window - now
    return window  # unreachable while the estimate fits the limit


def admit(w: TeamWindow, q: TeamQuota, *, now: int, window: int, lease: int, est: int, rid: str) -> Verdict:
    """Admit one request of `est` estimated tokens, or say why not and when to retry; all limits at once."""
    _expire(w, now, window)
    day = now // DAY_US
    if q.daily_tokens is not None and w.day != day:
        w.day, w.day_used = day, 0
    refusals: list[tuple[str, bool, int]] = []  # kind, too large, retry
    if q.rpm is not None and len(w.log) >= q.rpm:
        refusals.append(("requests", False, _requests_retry(w, q.rpm, now, window)))
    if q.tpm is not None and w.tokens + est > q.tpm:
        if est > q.tpm:
            refusals.append(("tokens", True, 0))
        else:
            refusals.append(("tokens", False, _tokens_retry(w, w.tokens + est - q.tpm, now, window)))
    if q.concurrency is not None and len(w.leases) >= q.concurrency:
        refusals.append(("concurrency", False, CONCURRENCY_RETRY_US))
    if q.daily_tokens is not None and w.day_used + est > q.daily_tokens:
        refusals.append(("daily_tokens", est > q.daily_tokens, (day + 1) * DAY_US - now))
    ok = not refusals
    if ok:
        if q.rpm is not None or q.tpm is not None:
            w.log.append((now, rid))
            w.weight[rid] = est
            w.tokens += est
        if q.concurrency is not None:
            w.leases[rid] = now + lease
        if q.daily_tokens is not None:
            w.day_used += est
    reset = w.log[0][0] + window - now if w.log else 0
    verdict = Verdict(ok, requests=len(w.log), tokens=w.tokens, reset_us=reset, now_us=now, day=day)
    if ok:
        return verdict
    large = [r for r in refusals if r[1]]
    if large:
        return replace(verdict, reason=large[0][0], too_large=True)
    return replace(verdict, reason=refusals[0][0], retry_us=max(r[2] for r in refusals))


def finish(w: TeamWindow, *, now: int, window: int, rid: str, est: int, day: int, billed: int) -> tuple[int, int, int]:
    """The request ended: free its concurrency slot; its `est` tokens become what the upstream billed.
    Returns (requests, tokens, reset_us) of the window for the response headers."""
    _expire(w, now, window)
    w.leases.pop(rid, None)
    if rid in w.weight:  # else it left the window already, or was never logged
        w.weight[rid] = billed
        w.tokens += billed - est
    if w.day == day:
        w.day_used = max(0, w.day_used + billed - est)
    return len(w.log), w.tokens, (w.log[0][0] + window - now if w.log else 0)


@dataclass(frozen=True, slots=True)
class Pace:
    """An upstream quota as spacings: microseconds between calls, and per token (0: not limited)."""

    request_us: float
    token_us: float

    @classmethod
    def of(cls, rpm: int | None, tpm: int | None, window_s: float, slack_s: float) -> Pace | None:
        """Calls are spaced as if the window were `slack_s` longer, so that calls delayed by up to that
        much on their way out still never put more than the quota into any window."""
        if rpm is None and tpm is None:
            return None
        span = (window_s + slack_s) * US
        return cls(span / rpm if rpm else 0.0, span / tpm if tpm else 0.0)

    def slower(self, shares: int) -> Pace:
        return Pace(self.request_us * shares, self.token_us * shares)


@dataclass(frozen=True, slots=True)
class Grant:
    ok: bool
    wait_us: int  # admitted: sleep this long before calling; refused: retry after this long
    now_us: int = 0
    unavailable: bool = False  # refused because the quota's Redis fails and its policy is "closed"


@dataclass(slots=True)
class PaceState:
    next_call: int = 0  # earliest time of the next call (theoretical arrival time)
    tokens_paid: int = 0  # time at which the tokens of the calls so far are paid for


def reserve(s: PaceState, p: Pace, *, now: int, tokens: int, max_wait: int) -> Grant:
    """The next slot, if it is at most `max_wait` away (else nothing is reserved)."""
    slot = max(now, s.next_call, s.tokens_paid)
    wait = slot - now
    if wait > max_wait:
        return Grant(False, wait - max_wait, now)
    s.next_call = round(slot + p.request_us)
    s.tokens_paid = round(slot + tokens * p.token_us)
    return Grant(True, wait, now)


def adjust(s: PaceState, p: Pace, *, delta_tokens: int) -> None:
    """Correct the token bill by what the upstream reported (negative: a refund)."""
    if p.token_us and delta_tokens and s.tokens_paid:
        s.tokens_paid = round(s.tokens_paid + delta_tokens * p.token_us)
