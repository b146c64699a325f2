"""The limiter arithmetic (app/limits/window.py, pacing.py) on an injected clock: the properties the gateway
promises, checked over random sequences with hypothesis."""

from __future__ import annotations

import copy
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from app.limits import pacing, window
from app.limits.pacing import Pace, PaceState
from app.limits.window import DAY_US, US, TeamQuota, TeamWindow

W = 60 * US
LEASE = 300 * US

steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20 * US), st.integers(min_value=0, max_value=400)),
    min_size=1,
    max_size=120,
)


def run(q: TeamQuota, seq: list[tuple[int, int]], start: int = 1_000 * US) -> list[tuple[int, int, window.Verdict]]:
    """Admit a request of `est` tokens after each delay; finish each one at once, billed its estimate."""
    w = TeamWindow()
    now = start
    out = []
    for i, (delay, est) in enumerate(seq):
        now += delay
        v = window.admit(w, q, now=now, window=W, lease=LEASE, est=est, rid=f"r{i}")
        if v.ok:
            window.finish(w, now=now, window=W, rid=f"r{i}", est=est, at=now, day=v.day, billed=est)
        out.append((now, est, v))
    return out


def in_any_window(times: list[tuple[int, int]]) -> tuple[int, int]:
    """Most requests and most tokens admitted in any window (t - W, t]."""
    most_n = most_tokens = 0
    for t, _ in times:
        inside = [(u, e) for u, e in times if t - W < u <= t]
        most_n = max(most_n, len(inside))
        most_tokens = max(most_tokens, sum(e for _, e in inside))
    return most_n, most_tokens


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(min_value=1, max_value=30), st.integers(min_value=400, max_value=3000))
def test_never_more_than_the_limits_in_any_window(seq: list[tuple[int, int]], rpm: int, tpm: int) -> None:
    out = run(TeamQuota(rpm=rpm, tpm=tpm), seq)
    admitted = [(t, e) for t, e, v in out if v.ok]
    most_n, most_tokens = in_any_window(admitted)
    assert most_n <= rpm
    assert most_tokens <= tpm


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(min_value=1, max_value=30))
def test_refused_only_when_the_window_and_one_bucket_are_full(seq: list[tuple[int, int]], rpm: int) -> None:
    """The approximation errs on the safe side only: a request is refused only when `rpm` were admitted in
    the last window plus at most one bucket (1/60 of a window) before it, never more than `rpm` in the
    window itself."""
    out = run(TeamQuota(rpm=rpm), seq)
    admitted = [t for t, _, v in out if v.ok]
    size = window.bucket_us(W)
    for now, _, v in out:
        in_window = sum(1 for t in admitted if now - W < t <= now)
        in_window_and_bucket = sum(1 for t in admitted if now - W - size < t <= now)
        if v.ok:
            assert in_window <= rpm
        else:
            assert v.reason == "requests" and in_window_and_bucket >= rpm and in_window <= rpm


def test_a_burst_admits_exactly_the_limit_and_the_state_stays_small() -> None:
    for start in (1_000 * US, 1_020 * US - 1, 1_020 * US):  # mid-window, last microsecond of one, first
        out = run(TeamQuota(rpm=30), [(0, 1)] * 300, start=start)
        assert sum(v.ok for _, _, v in out) == 30
    w = TeamWindow()
    q = TeamQuota(rpm=100_000, tpm=10**9)
    for i in range(20_000):  # 20,000 requests spread over two windows: at most 61 buckets held
        window.admit(w, q, now=1_000 * US + i * 6_000, window=W, lease=LEASE, est=10, rid=f"r{i}")
    assert len(w.buckets) <= window.BUCKETS + 1


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(min_value=1, max_value=10), st.integers(min_value=400, max_value=2000))
def test_retry_after_is_exact(seq: list[tuple[int, int]], rpm: int, tpm: int) -> None:
    """A refused request is admitted exactly Retry-After later (nothing else happening), not a microsecond before."""
    q = TeamQuota(rpm=rpm, tpm=tpm)
    w = TeamWindow()
    now = 1_000 * US
    for i, (delay, est) in enumerate(seq):
        now += delay
        before = copy.deepcopy(w)
        v = window.admit(w, q, now=now, window=W, lease=LEASE, est=est, rid=f"r{i}")
        if v.ok or v.too_large:
            continue
        assert 0 < v.retry_us < W + window.bucket_us(W)
        at = now + v.retry_us
        early = window.admit(copy.deepcopy(before), q, now=at - 1, window=W, lease=LEASE, est=est, rid="x")
        late = window.admit(copy.deepcopy(before), q, now=at, window=W, lease=LEASE, est=est, rid="x")
        assert not early.ok
        assert late.ok


def test_reconcile_and_refund() -> None:
    """Tokens are reserved as estimated, then become what the upstream billed; cache hits bill nothing."""
    q = TeamQuota(tpm=1000)
    w = TeamWindow()
    t = 1_000 * US
    v = window.admit(w, q, now=t, window=W, lease=LEASE, est=600, rid="a")
    assert v.ok and v.tokens == 600
    assert not window.admit(w, q, now=t, window=W, lease=LEASE, est=600, rid="b").ok
    requests, tokens, _ = window.finish(w, now=t, window=W, rid="a", est=600, at=t, day=v.day, billed=0)
    assert (requests, tokens) == (1, 0)
    assert window.admit(w, q, now=t, window=W, lease=LEASE, est=600, rid="b").ok
    # Billed more than estimated: the window is charged the real bill.
    window.finish(w, now=t, window=W, rid="b", est=600, at=t, day=v.day, billed=900)
    refused = window.admit(w, q, now=t, window=W, lease=LEASE, est=200, rid="c")
    # t starts a bucket (1 s each): its tokens leave the window when its last microsecond is a window old
    assert not refused.ok and refused.reason == "tokens" and refused.retry_us == W + US - 1


def test_a_request_over_a_limit_can_never_pass() -> None:
    w = TeamWindow()
    v = window.admit(w, TeamQuota(tpm=100), now=US, window=W, lease=LEASE, est=101, rid="a")
    assert not v.ok and v.too_large and v.reason == "tokens" and v.retry_us == 0
    v = window.admit(w, TeamQuota(daily_tokens=100), now=US, window=W, lease=LEASE, est=101, rid="a")
    assert not v.ok and v.too_large and v.reason == "daily_tokens"


def test_concurrency_leases_free_on_finish_and_expire() -> None:
    q = TeamQuota(concurrency=2)
    w = TeamWindow()
    t = 1_000 * US
    a = window.admit(w, q, now=t, window=W, lease=LEASE, est=1, rid="a")
    b = window.admit(w, q, now=t, window=W, lease=LEASE, est=1, rid="b")
    c = window.admit(w, q, now=t, window=W, lease=LEASE, est=1, rid="c")
    assert a.ok and b.ok and not c.ok and c.reason == "concurrency"
    window.finish(w, now=t, window=W, rid="a", est=1, at=t, day=a.day, billed=1)
    assert window.admit(w, q, now=t, window=W, lease=LEASE, est=1, rid="c").ok
    # A lost replica never finishes its requests: their leases expire.
    assert not window.admit(w, q, now=t + LEASE - 1, window=W, lease=LEASE, est=1, rid="d").ok
    assert window.admit(w, q, now=t + LEASE, window=W, lease=LEASE, est=1, rid="d").ok


def test_daily_budget_resets_at_utc_midnight() -> None:
    q = TeamQuota(daily_tokens=1000)
    w = TeamWindow()
    day = 20_000
    t = day * DAY_US + DAY_US - 10 * US  # ten seconds before midnight
    a = window.admit(w, q, now=t, window=W, lease=LEASE, est=800, rid="a")
    assert a.ok
    refused = window.admit(w, q, now=t + US, window=W, lease=LEASE, est=300, rid="b")
    assert not refused.ok and refused.reason == "daily_tokens" and refused.retry_us == 9 * US
    # Reconciled down: it fits again the same day.
    window.finish(w, now=t + US, window=W, rid="a", est=800, at=t, day=a.day, billed=500)
    assert window.admit(w, q, now=t + US, window=W, lease=LEASE, est=300, rid="b").ok
    assert window.admit(w, q, now=(day + 1) * DAY_US, window=W, lease=LEASE, est=1000, rid="c").ok


ops = st.lists(
    st.tuples(
        st.sampled_from(("admit", "finish", "give_back", "grant")),
        st.integers(min_value=-2 * US, max_value=30 * US),  # clocks may step back (skewed processes)
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=-3, max_value=1),  # the bucket of a give-back, from the current one
    ),
    min_size=1,
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.sampled_from([10 * US, W, 61 * US]))
def test_kept_sums_and_oldest_bucket_are_those_of_the_buckets(seq: list[tuple[str, int, int, int]], win: int) -> None:
    """The window's sums and the time its oldest bucket leaves, kept as the buckets change (so that a request
    neither sums them nor looks for expired ones), are what the buckets themselves say, after any change."""
    w, q, now = TeamWindow(), TeamQuota(rpm=200, tpm=20_000), 1_000 * US
    size = window.bucket_us(win)
    for i, (op, step, n, db) in enumerate(seq):
        now = max(0, now + step)
        if op == "admit":
            window.admit(w, q, now=now, window=win, lease=LEASE, est=n, rid=f"r{i}")
        elif op == "finish":
            at = now - db * size
            window.finish(w, now=now, window=win, rid=f"r{i}", est=n, at=at, day=0, billed=n // 2)
        elif op == "give_back":
            b = now // size + db
            window.give_back(w, now=now, window=win, bucket=b, requests=n // 10, tokens=n)
        else:
            window.grant(w, q, now=now, window=win, requests=n // 5, tokens=n * 10, processes=2)
        assert (w.count, w.tokens) == (sum(c[0] for c in w.buckets.values()), sum(c[1] for c in w.buckets.values()))
        probe = copy.deepcopy(w)
        window._expire(probe, now, win)
        left = {b: c for b, c in w.buckets.items() if (b + 1) * size + win - 1 > now}
        assert probe.buckets == left
        assert window._reset(probe, now) == ((min(left) + 1) * size + win - 1 - now if left else 0)


@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=1, max_value=1000),
)
def test_divided_limits_never_add_up_to_more(limit: int, shares: int) -> None:
    part = TeamQuota(rpm=limit).divided(shares).rpm
    assert part is not None and part >= 1
    if shares <= limit:
        assert part * shares <= limit
        assert (part + 1) * shares > limit  # and no smaller than needed
    else:
        assert part == 1


arrivals = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3 * US), st.integers(min_value=1, max_value=5000)),
    min_size=1,
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(arrivals, st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=30 * US))
def test_upstream_slots_fifo_bounded_and_never_above_quota(seq: list[tuple[int, int]], rpm: int, max_wait: int) -> None:
    pace = Pace.of(rpm, None, 60, 0)
    assert pace is not None
    s = PaceState()
    now = 1_000 * US
    slots = []
    for delay, tokens in seq:
        now += delay
        before = copy.deepcopy(s)
        g = pacing.reserve(s, pace, now=now, tokens=tokens, max_wait=max_wait)
        if g.ok:
            assert 0 <= g.wait_us <= max_wait
            slots.append(now + g.wait_us)
        else:
            assert g.wait_us > 0 and s == before  # a refusal reserves nothing
    assert slots == sorted(slots)  # first come, first served
    for a, b in itertools.pairwise(slots):
        assert b - a >= pace.request_us - 1  # rounding to the microsecond
    for x in slots:  # at most rpm calls start in any window [x, x + W)
        assert sum(1 for y in slots if x <= y < x + W) <= rpm


@settings(max_examples=200, deadline=None)
@given(arrivals, st.integers(min_value=5000, max_value=100_000))
def test_upstream_tokens_paid_at_the_quota_rate(seq: list[tuple[int, int]], tpm: int) -> None:
    """Tokens are paid after: the calls starting in any window bill at most the quota plus the last one."""
    pace = Pace.of(None, tpm, 60, 0)
    assert pace is not None
    s = PaceState()
    now = 1_000 * US
    calls = []
    for delay, tokens in seq:
        now += delay
        g = pacing.reserve(s, pace, now=now, tokens=tokens, max_wait=10**12)
        assert g.ok
        calls.append((now + g.wait_us, tokens))
    for x, _ in calls:
        inside = [t for y, t in calls if x <= y < x + W]
        assert sum(inside) <= tpm + inside[-1] + len(inside)  # + rounding to the microsecond


def test_upstream_bill_corrections_move_the_next_slot() -> None:
    pace = Pace.of(None, 60_000, 60, 0)  # 1 token per ms
    assert pace is not None
    s = PaceState()
    assert pacing.reserve(s, pace, now=0, tokens=1000, max_wait=10 * US).wait_us == 0
    pacing.adjust(s, pace, delta_tokens=-400)  # billed 600
    assert pacing.reserve(s, pace, now=0, tokens=1, max_wait=10 * US).wait_us == 600_000


def test_slack_spaces_calls_wider() -> None:
    pace = Pace.of(60, None, 60, 0.5)
    assert pace is not None and abs(pace.request_us - 60.5 / 60 * US) < 1e-6
    assert pace.slower(3).request_us == 3 * pace.request_us
    assert Pace.of(None, None, 60, 0) is None


def test_a_quota_is_active_when_any_limit_is_set() -> None:
    for mask in range(16):
        values = [7 if mask >> i & 1 else None for i in range(4)]
        quota = TeamQuota(*values)
        assert quota.active is any(v is not None for v in quota.by_kind().values()) is (mask != 0)
