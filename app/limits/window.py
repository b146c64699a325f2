"""The arithmetic of team limits, in plain Python on an explicit clock (integer microseconds).

This module is the reference: the in-process store runs it as it is, and the Redis scripts
(`team_admit.lua`, `team_finish.lua`, `quota_reserve.lua`, `quota_adjust.lua`) take the same steps in the
same order; tests run random sequences through both and compare every decision. Upstream quotas' pacing is
in pacing.py.

Team limits (requests and tokens per window) are a **sliding window counted in buckets**: the window is cut
into 60 buckets (one second of a minute); each bucket holds the requests admitted in it and their tokens
(estimated, then billed); a bucket counts until its last microsecond is a whole window old. So a team's
state is at most 61 pairs of numbers, whatever its rate (a log of one entry per request grew with rpm).
The approximation errs on one side only: "never more than N in any window" still holds exactly, and a
request may be refused when N were admitted in the window plus at most one bucket before it (so a team
flooding all the time gets between 60/61 and all of its limit). Retry-After is exact: when the oldest
buckets that free enough room leave the window (at most a window plus a bucket). Reconciling a request's
tokens with the upstream's bill rewrites its bucket. GCRA or a token bucket would keep less state but
admit a full burst plus the refill (up to twice the limit in a minute); two fixed-window counters
weighted into a sliding one were measured here admitting up to 1.4x the limit in some window on Poisson
traffic at 1.5x the limit.

"""

from __future__ import annotations

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
        """Whether any limit is enforced (asked on every request: one expression, no dict)."""
        return not (self.rpm is None and self.tpm is None and self.concurrency is None and self.daily_tokens is None)

    def keep(self, kinds: set[str]) -> TeamQuota:
        """Only the named kinds stay enforced."""
        v = self.by_kind()
        return TeamQuota(*(v[k] if k in kinds else None for k in KINDS))

    def divided(self, shares: int) -> TeamQuota:
        """Each of `shares` processes enforcing alone gets its part: the sum never exceeds the limit, except
        that a limit below the number of processes still lets one request through in each."""
        return TeamQuota(*(None if v is None else max(1, v // shares) for v in self.by_kind().values()))


@dataclass(slots=True)
class Verdict:
    """A decision (not frozen: one is made per request, and a frozen dataclass's __init__ costs ~3x; never
    changed once made: `dataclasses.replace` makes another)."""

    ok: bool
    reason: str | None = None  # the kind that refused, or "unavailable" (policy closed while Redis fails)
    too_large: bool = False  # the request alone is over the limit: waiting cannot help
    retry_us: int = 0
    requests: int = 0  # in the window, this request included when admitted
    tokens: int = 0
    reset_us: int = 0  # until the oldest entry leaves the window (0: window empty)
    now_us: int = 0
    day: int = 0


BUCKETS = 60  # per window: a team's state is at most this many counters, whatever its rate
NEVER = 1 << 62  # the `expires` of a window without buckets


def bucket_us(window: int) -> int:
    return -(-window // BUCKETS)


@dataclass(slots=True)
class TeamWindow:
    """One team's state in one process (the Redis hash holds the same): per bucket (a 1/60 slice of the
    window, by number), the requests admitted in it and their tokens (estimated, then billed)."""

    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket number -> [requests, tokens]
    count: int = 0  # the sums over the buckets (changed with them: `_set`, `_drop`)
    tokens: int = 0
    leases: dict[str, int] = field(default_factory=dict)  # request id -> expires at
    day: int = -1
    day_used: int = 0
    # When the oldest bucket stops counting (NEVER: no bucket), for the window `span` (0: not known); kept
    # exact by every change of the buckets' numbers, so that a request expires them only when one is gone
    expires: int = 0
    span: int = 0


def _gone(b: int, size: int, window: int) -> int:
    """When bucket `b` stops counting: once its last microsecond is a whole window old."""
    return (b + 1) * size + window - 1


def _expire(w: TeamWindow, now: int, window: int) -> None:
    if w.leases:
        for rid in [r for r, until in w.leases.items() if until <= now]:
            del w.leases[rid]
    if now < w.expires and w.span == window:
        return  # no bucket is gone yet
    size = bucket_us(window)
    for b in [b for b in w.buckets if _gone(b, size, window) <= now]:
        _drop(w, b)
    w.expires, w.span = (_gone(min(w.buckets), size, window) if w.buckets else NEVER), window


def _counts(w: TeamWindow, bucket: int, window: int) -> list[int]:
    """The counts of `bucket` (the current one), a new bucket when it has none (after `_expire`)."""
    counts = w.buckets.get(bucket)
    if counts is None:
        counts = w.buckets[bucket] = [0, 0]
        w.expires = min(w.expires, _gone(bucket, bucket_us(window), window))
    return counts


def _set(w: TeamWindow, counts: list[int], requests: int, tokens: int) -> None:
    """A bucket's counts become `requests` and `tokens`; the window's sums follow."""
    w.count += requests - counts[0]
    w.tokens += tokens - counts[1]
    counts[0], counts[1] = requests, tokens


def _drop(w: TeamWindow, bucket: int) -> None:
    requests, tokens = w.buckets.pop(bucket)
    w.count -= requests
    w.tokens -= tokens


def _retry(w: TeamWindow, slot: int, need: int, now: int, window: int) -> int:
    """Until the oldest buckets leaving the window free `need` (of requests: slot 0, tokens: slot 1)."""
    size, freed = bucket_us(window), 0
    for b in sorted(w.buckets):
        freed += w.buckets[b][slot]
        if freed >= need:
            return _gone(b, size, window) - now
    return window  # unreachable while the need fits the limit


def _totals(w: TeamWindow) -> tuple[int, int]:
    return w.count, w.tokens


def _reset(w: TeamWindow, now: int) -> int:
    """Until the oldest counted request leaves the window (0: the window is empty); after `_expire`."""
    return w.expires - now if w.buckets else 0


def admit(w: TeamWindow, q: TeamQuota, *, now: int, window: int, lease: int, est: int, rid: str) -> Verdict:
    """Admit one request of `est` estimated tokens, or say why not and when to retry; all limits at once."""
    _expire(w, now, window)
    day = now // DAY_US
    if q.daily_tokens is not None and w.day != day:
        w.day, w.day_used = day, 0
    count, tokens = _totals(w)
    refusals: list[tuple[str, bool, int]] = []  # kind, too large, retry
    if q.rpm is not None and count >= q.rpm:
        refusals.append(("requests", False, _retry(w, 0, count - q.rpm + 1, now, window)))
    if q.tpm is not None and tokens + est > q.tpm:
        if est > q.tpm:
            refusals.append(("tokens", True, 0))
        else:
            refusals.append(("tokens", False, _retry(w, 1, tokens + est - q.tpm, now, window)))
    if q.concurrency is not None and len(w.leases) >= q.concurrency:
        refusals.append(("concurrency", False, CONCURRENCY_RETRY_US))
    if q.daily_tokens is not None and w.day_used + est > q.daily_tokens:
        refusals.append(("daily_tokens", est > q.daily_tokens, (day + 1) * DAY_US - now))
    ok = not refusals
    if ok:
        if q.rpm is not None or q.tpm is not None:
            counts = _counts(w, now // bucket_us(window), window)
            counts[0] += 1  # `_set`, inline: once per request
            counts[1] += est
            w.count = count = count + 1
            w.tokens = tokens = tokens + est
        if q.concurrency is not None:
            w.leases[rid] = now + lease
        if q.daily_tokens is not None:
            w.day_used += est
    verdict = Verdict(ok, requests=count, tokens=tokens, reset_us=_reset(w, now), now_us=now, day=day)
    if ok:
        return verdict
    large = [r for r in refusals if r[1]]
    if large:
        return replace(verdict, reason=large[0][0], too_large=True)
    return replace(verdict, reason=refusals[0][0], retry_us=max(r[2] for r in refusals))


def finish(
    w: TeamWindow, *, now: int, window: int, rid: str, est: int, at: int, day: int, billed: int
) -> tuple[int, int, int]:
    """The request (admitted at `at`) ended: free its concurrency slot; its `est` tokens become what the
    upstream billed, in the bucket that counted it (unless it left the window). Returns (requests, tokens,
    reset_us) of the window for the response headers."""
    _expire(w, now, window)
    w.leases.pop(rid, None)
    counts = w.buckets.get(at // bucket_us(window))
    if counts is not None:
        _set(w, counts, counts[0], max(0, counts[1] + billed - est))
    if w.day == day:
        w.day_used = max(0, w.day_used + billed - est)
    count, tokens = _totals(w)
    return count, tokens, _reset(w, now)


def give_back(w: TeamWindow, *, now: int, window: int, bucket: int, requests: int, tokens: int) -> None:
    """A process gives back what it did not use of a block granted in `bucket` (see `grant`): the bucket's
    counts fall to what was really admitted in it (a bucket left with no request is deleted; one that left
    the window is gone already). Lowering a count to what was admitted keeps every bound exact."""
    _expire(w, now, window)
    counts = w.buckets.get(bucket)
    if counts is None:
        return
    _set(w, counts, max(0, counts[0] - requests), max(0, counts[1] - tokens))
    if counts[0] == 0:
        _drop(w, bucket)
        w.expires = 0  # the oldest may have gone: found again by the next `_expire`


def grant(
    w: TeamWindow, q: TeamQuota, *, now: int, window: int, requests: int, tokens: int, processes: int
) -> tuple[int, int, int]:
    """Reserve a block for one process in the current bucket: counted at once as admitted there, so the sum
    over every process never passes the limits; the process then admits from it alone until the bucket ends
    and gives back the rest (`give_back`). At most `requests` and `tokens`, and at most a 1/(2 x processes)
    share of what is left of each limit in the window; nothing when that is under 2 requests (near the
    limit every request is decided alone, as without blocks) or the tokens are already over `tpm`. Teams
    with a concurrency or daily limit get no blocks. Returns (bucket, requests, tokens) granted."""
    _expire(w, now, window)
    bucket = now // bucket_us(window)
    if requests < 2 or q.concurrency is not None or q.daily_tokens is not None:
        return bucket, 0, 0
    count, used = _totals(w)
    n, t = requests, tokens
    if q.rpm is not None:
        n = min(n, (q.rpm - count) // (2 * processes))
    if q.tpm is not None:
        if used > q.tpm:
            n = 0
        t = min(t, (q.tpm - used) // (2 * processes))
    if n < 2:
        return bucket, 0, 0
    t = max(0, t)
    counts = _counts(w, bucket, window)
    _set(w, counts, counts[0] + n, counts[1] + t)
    return bucket, n, t
