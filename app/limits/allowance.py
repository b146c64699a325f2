"""Allowance: the block of a team's limits this process holds, so that a request within them is admitted
without a Redis round trip.

A process asks Redis (in the admission script's call, `team_admit.lua`) for a block of requests (and tokens)
in the team's current bucket; Redis counts the whole block as admitted in that bucket at once
(`window.grant`), so the sum over every process never passes the limit. The process then admits from it
alone until it is spent or the bucket ends; what is left goes back to that bucket with the team's next call
(`window.give_back`: a count lowered to what was really admitted in a past bucket stays exact).

The bucket's end is judged on this process's monotonic clock from the reply that granted the block: Redis ran
the script after the call was sent, so `sent + (end - redis_now)` is no later than the bucket's real end
(less a margin for the two clocks' rates). A request admitted from the block is therefore admitted in its
bucket, in Redis's time, as if Redis had decided it there: "never more than N in any window" holds as for
requests decided one by one (docs/limits.md has the proof's outline and the worst case of refusing early).

A request admitted from the block is finished there too while the block is held (`settle`): the difference of
its bill from its estimate goes back to the block, or comes from it, and so reaches Redis with the block's rest,
as exactly as the finish script would have counted it, without a call.

The block's size follows what this process admitted for the team in this bucket and the last, projected over
what is left of the bucket; Redis caps it (a 1/(2 x live processes) share of what is left in the window; none
under 2 requests). A new block is asked for when half of the last one is spent (prefetch), and at the start
of the next bucket while the team is busy (renew), so requests rarely wait.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .window import Verdict

MARGIN_US = 1_000  # the block stops this long before its bucket's end (rates of the two clocks)


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(slots=True)
class Allowance:
    limits: tuple[int, int]  # rpm, tpm it was granted under (0: not limited); a reload that changes them drops it
    size: int  # a bucket, in us
    bucket: int = -1  # of the block held
    until: int = 0  # monotonic us: the block is used only before this
    requests: int = 0  # left in the block
    tokens: int = 0
    block: int = 0  # requests of the last block granted (a new one is asked for at half of it)
    block_tokens: int = 0
    # The last reply: Redis's time when it ran, this process's monotonic time when it was sent (an estimate of
    # Redis's clock that runs ahead of it), the window's counts then (headers of local admissions)
    redis_now: int = 0
    sent: int = 0
    count: int = 0
    window_tokens: int = 0
    reset: int = 0
    day: int = 0
    asking: bool = False  # a call asking for a block is on its way (one at a time)
    grants: tuple[tuple[int, int, int], ...] = ()  # the last blocks granted: (Redis's time, requests, tokens)
    back: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [requests, tokens] to give back
    # What this process admitted for the team, in `seen_bucket` and the bucket before it
    seen_bucket: int = -1
    seen: int = 0
    seen_tokens: int = 0
    before: int = 0
    before_tokens: int = 0

    def take(self, est: int, mono: int) -> Verdict | None:
        """Admit one request of `est` tokens from the block, or None (spent, or its bucket ended)."""
        if mono >= self.until:
            self.retire()
            return None
        if self.requests < 1 or self.tokens < est:
            return None
        self.requests -= 1
        self.tokens -= est
        self.note(self.bucket, 1, est)
        elapsed = mono - self.sent
        # Admitted in the block's bucket, where Redis counted it: its ticket is dated there (the finish, in the
        # block or by the script, corrects that bucket). Redis's clock estimated from the last reply may be past
        # the bucket's end in the block's last moments: that reply may have been sent longer before Redis ran it
        # than the one that granted the block, whose reply `until` is judged from.
        return Verdict(
            True,
            requests=self.count - self.requests,
            tokens=self.window_tokens - self.tokens,
            reset_us=max(0, self.reset - elapsed),
            now_us=min(self.redis_now + elapsed, (self.bucket + 1) * self.size - 1),
            day=self.day,
        )

    def settle(self, bucket: int, est: int, billed: int, mono: int) -> tuple[int, int, int] | None:
        """A request admitted from the block in `bucket` ended, billed `billed` tokens for its estimate `est`:
        settled in the block while it is held (its tokens go back to the block, or a bill over the estimate is
        taken from it; the block's rest goes back to that bucket as before, so Redis ends up counting the bill,
        as `window.finish` would have made it). Returns the window's requests, tokens and reset for the headers,
        as `take` does; None (nothing changed) when the block of `bucket` is no longer held or cannot cover the
        bill: Redis settles it."""
        if mono >= self.until or bucket != self.bucket or billed - est > self.tokens:
            return None
        self.tokens -= billed - est
        return self.count - self.requests, self.window_tokens - self.tokens, max(0, self.reset - (mono - self.sent))

    def unused_at(self, redis_now: int) -> tuple[int, int]:
        """What is left of the blocks this process held when Redis ran a decision at `redis_now`: the block
        held, less the blocks granted at or after it (the counts of that decision do not hold them)."""
        later_n = sum(n for at, n, _ in self.grants if at >= redis_now)
        later_t = sum(t for at, _, t in self.grants if at >= redis_now)
        return max(0, self.requests - later_n), max(0, self.tokens - later_t)

    def retire(self) -> None:
        """Stop using the block (its bucket ended, or the limits changed): what is left of it goes back."""
        if self.requests or self.tokens:
            back = self.back.setdefault(self.bucket, [0, 0])
            back[0] += self.requests
            back[1] += self.tokens
        self.requests = self.tokens = self.until = 0

    def giving_back(self, now_bucket: int) -> list[int]:
        """The blocks' rest to give back with the next call, flat (bucket, requests, tokens, ...): one entry
        per bucket; those that left the window are dropped (nothing is counted there any more)."""
        out: list[int] = []
        for b, (n, t) in self.back.items():
            if b >= now_bucket - 61:
                out += (b, n, t)
        self.back.clear()
        return out

    def note(self, bucket: int, requests: int, tokens: int) -> None:
        """Count what this process admitted for the team in `bucket` (its rate sizes the blocks)."""
        if bucket > self.seen_bucket:
            consecutive = bucket == self.seen_bucket + 1
            self.before, self.before_tokens = (self.seen, self.seen_tokens) if consecutive else (0, 0)
            self.seen_bucket, self.seen, self.seen_tokens = bucket, 0, 0
        if bucket == self.seen_bucket:
            self.seen += requests
            self.seen_tokens += tokens

    def now(self, mono: int) -> int:
        """Redis's time, estimated ahead of it (0: no reply yet)."""
        return self.redis_now + mono - self.sent if self.sent else 0

    def want(self, mono: int) -> tuple[int, int]:
        """The block to ask for now: this process's use of the team projected over the rest of the current
        bucket (its rate in this bucket and the last), less what it holds; (0, 0) when that is under 2
        requests, or a call already asks."""
        now = self.now(mono)
        if self.asking or not now:
            return 0, 0
        b = now // self.size
        elapsed = now - b * self.size
        left = self.size - elapsed
        if self.seen_bucket == b:
            seen, seen_t, before, before_t = self.seen, self.seen_tokens, self.before, self.before_tokens
        elif self.seen_bucket == b - 1:
            seen, seen_t, before, before_t = 0, 0, self.seen, self.seen_tokens
        else:
            return 0, 0
        span = max(elapsed, self.size // 10)
        held = mono < self.until and self.bucket == b
        n = max(math.ceil(before * left / self.size), math.ceil(seen * left / span)) - (self.requests if held else 0)
        t = max(math.ceil(before_t * left / self.size), math.ceil(seen_t * left / span)) - (self.tokens if held else 0)
        return (n, max(0, t)) if n >= 2 else (0, 0)

    def low(self, mono: int) -> bool:
        """Half of the last block is spent (or its tokens): time to ask for more, before it runs out."""
        if self.asking or mono >= self.until:
            return False
        return self.requests * 2 < self.block or self.tokens * 2 < self.block_tokens

    def replied(
        self, *, sent: int, redis_now: int, day: int, count: int, tokens: int, reset: int, block: tuple[int, int, int]
    ) -> None:
        """A reply of the team's script: the window's counts for the headers (unless a later run's reply came
        first: replies of calls on different connections may be read out of order), and the block granted if
        any."""
        if redis_now >= self.redis_now:
            self.redis_now, self.sent, self.day = redis_now, sent, day
            self.count, self.window_tokens, self.reset = count, tokens, reset
        bucket, n, t = block
        if n <= 0:
            return
        self.grants = (*self.grants[-3:], (redis_now, n, t))
        if bucket != self.bucket:
            self.retire()
            self.bucket = bucket
        self.until = sent + (bucket + 1) * self.size - redis_now - MARGIN_US
        self.requests += n
        self.tokens += t
        self.block, self.block_tokens = n, t

    def ends_by(self, rtt: int) -> int:
        """Monotonic us by which the block's bucket has surely ended in Redis (the reply's way back at most)."""
        return self.until + MARGIN_US + rtt + MARGIN_US
