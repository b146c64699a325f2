"""The arithmetic of upstream quotas, in plain Python on an explicit clock (integer microseconds): the
reference that the in-process store runs and `quota_reserve.lua`, `quota_adjust.lua` mirror.

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

from dataclasses import dataclass

from .window import US


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
