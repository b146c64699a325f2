"""Blocks of a team's limits held by processes (app/limits/allowance.py) over the reference arithmetic of
window.py (grant, give_back, admit): random traffic from several simulated processes, each with its own
monotonic clock, calls reaching "Redis" some time after they were sent. Whatever the sequence, no window
holds more than the limits, every bucket counts at least what was really admitted in it, and once every
process gave back its rest the counts are exactly what was admitted."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from app.limits import window
from app.limits.allowance import Allowance
from app.limits.window import US, TeamQuota, TeamWindow

W = 3 * US  # buckets of 50 ms
SIZE = window.bucket_us(W)
START = 1_000 * W


class Sim:
    """`processes` gateways sharing one team's window: what shared.RedisStore does, on explicit clocks."""

    def __init__(self, q: TeamQuota, offsets: list[int]) -> None:
        self.q = q
        self.w = TeamWindow()
        self.offsets = offsets  # each process's monotonic clock minus Redis's
        self.allow = [Allowance((q.rpm or 0, q.tpm or 0), SIZE) for _ in offsets]
        self.admitted: list[tuple[int, int]] = []  # (Redis time, tokens) of every request admitted
        self.per_bucket: Counter[int] = Counter()
        self.tokens_per_bucket: Counter[int] = Counter()

    def call(self, p: int, t: int, lag: int, requests: list[int], ask: bool = True) -> list[bool]:
        """One script call of process p, sent `lag` before Redis runs it at `t`: give back, decide each
        request, grant a block (team_admit.lua's order)."""
        a, sent = self.allow[p], t - lag + self.offsets[p]
        back = a.giving_back(t // SIZE)
        for b, n, tk in zip(back[::3], back[1::3], back[2::3], strict=True):
            window.give_back(self.w, now=t, window=W, bucket=b, requests=n, tokens=tk)
        want = a.want(sent) if ask else (0, 0)
        out = []
        for est in requests:
            v = window.admit(self.w, self.q, now=t, window=W, lease=US, est=est, rid="r")
            out.append(v.ok)
            if v.ok:
                self.record(t, est)
                a.note(t // SIZE, 1, est)
        block = window.grant(
            self.w, self.q, now=t, window=W, requests=want[0], tokens=want[1], processes=len(self.allow)
        )
        count, tokens = window._totals(self.w)
        a.replied(sent=sent, redis_now=t, day=0, count=count, tokens=tokens, reset=0, block=block)
        return out

    def record(self, t: int, est: int) -> None:
        self.admitted.append((t, est))
        self.per_bucket[t // SIZE] += 1
        self.tokens_per_bucket[t // SIZE] += est

    def request(self, p: int, t: int, lag: int, est: int, refund: int = 0) -> bool:
        """A request of `est` tokens; admitted from the block, it ends at once billed `est - refund`, settled in
        the block (Allowance.settle), or by Redis's finish when the block cannot settle it."""
        a, mono = self.allow[p], t + self.offsets[p]
        v = a.take(est, mono)
        if v is not None:
            billed = max(0, est - refund)
            self.record(t, billed)
            if billed != est and a.settle(v.now_us // SIZE, est, billed, mono) is None:
                window.finish(self.w, now=t, window=W, rid="r", est=est, at=v.now_us, day=0, billed=billed)
            if a.low(mono) and a.want(mono)[0]:
                self.call(p, t, lag, [])
            return True
        a.retire()
        return self.call(p, t, lag, [est])[0]

    def check(self, t: int) -> None:
        """Every bucket still in the window counts at least what was admitted in it."""
        window._expire(self.w, t, W)
        for b, (n, tokens) in self.w.buckets.items():
            assert n >= self.per_bucket[b]
            assert tokens >= self.tokens_per_bucket[b]


def most_in_any_window(admitted: list[tuple[int, int]]) -> tuple[int, int]:
    admitted = sorted(admitted)
    most_n = most_t = 0
    lo, tokens = 0, 0
    for hi, (t, est) in enumerate(admitted):
        tokens += est
        while admitted[lo][0] <= t - W:
            tokens -= admitted[lo][1]
            lo += 1
        most_n, most_t = max(most_n, hi - lo + 1), max(most_t, tokens)
    return most_n, most_t


steps = st.lists(
    st.tuples(
        st.integers(0, 7),  # process
        st.integers(0, 30_000),  # us since the step before
        st.integers(0, 5_000),  # how long before Redis ran it the call was sent
        st.sampled_from([0, 0, 0, 5, 40]),  # estimated tokens (0: a cache hit)
        st.sampled_from([0, 0, 3, 40]),  # tokens of the estimate not billed (a request admitted from a block)
    ),
    min_size=1,
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(
    steps,
    st.integers(2, 8),
    st.sampled_from([None, 8, 40, 300]),
    st.sampled_from([None, 200, 5000]),
    st.lists(st.integers(-(10**9), 10**9), min_size=8, max_size=8),
)
def test_blocks_never_put_more_than_the_limit_in_any_window(
    seq: list[tuple[int, int, int, int, int]], processes: int, rpm: int | None, tpm: int | None, offsets: list[int]
) -> None:
    """Requests admitted from blocks, some billed less than their estimate (settled in the block): no window
    holds more than the limits (the bills counted), and once the blocks go back Redis counts the bills."""
    q = TeamQuota(rpm=rpm, tpm=tpm if tpm or rpm else 100)
    sim = Sim(q, offsets[:processes])
    t = START
    for p, gap, lag, est, refund in seq:
        t += gap
        sim.request(p % processes, t, lag, est, refund)
        sim.check(t)
    n, tokens = most_in_any_window(sim.admitted)
    assert q.rpm is None or n <= q.rpm
    assert q.tpm is None or tokens <= q.tpm
    # Every process gives its rest back: the counts are then exactly what was admitted.
    for p in range(processes):
        sim.allow[p].retire()
        sim.call(p, t, 0, [], ask=False)
    for b, (count, used) in sim.w.buckets.items():
        assert (count, used) == (sim.per_bucket[b], sim.tokens_per_bucket[b])


def test_many_processes_holding_blocks_at_a_buckets_edge_stay_within_the_limit() -> None:
    """Every process asks for a large block just before a bucket's end and floods just after: the blocks of
    the ending bucket cannot be used past it (each process's clock estimates Redis's ahead of it), and the
    new bucket's blocks come out of what is left."""
    q = TeamQuota(rpm=1000)
    sim = Sim(q, [0, 7 * US, -3 * US, 11, 5 * US, -US, 13, 17])
    start = (START // SIZE) * SIZE
    for p in range(8):  # a busy past: each process admitted 100 requests in the last bucket
        sim.allow[p].note(start // SIZE - 1, 100, 0)
        sim.request(p, start + 10, 5, 0)  # decided by Redis (no reply yet to size a block)
    for p in range(8):
        sim.request(p, start + 1_000, 900, 0)  # each now holds a block of its share
    held = [a.requests for a in sim.allow]
    assert sum(held) > 8 * 20
    edge = start + SIZE
    for t in range(edge - 2_000, edge + 40 * SIZE, 89):
        for p in range(8):
            sim.request(p, t, 2_000, 0)
        sim.check(t)
    assert most_in_any_window(sim.admitted)[0] == 1000  # all of it, never more


def test_near_the_limit_every_request_is_decided_alone() -> None:
    """No block under 2 requests per share: the last room of the window goes to requests one by one, and
    nothing is refused while Redis would admit it (no process holds any of it)."""
    q = TeamQuota(rpm=20)
    sim = Sim(q, [0, 0, 0, 0])
    t = START
    admitted = 0
    for i in range(60):
        t += 1_000
        admitted += sim.request(i % 4, t, 100, 0)
    assert admitted == 20  # all 20, though 4 processes asked: what blocks hold is given back in time
    assert most_in_any_window(sim.admitted)[0] == 20


def test_a_block_is_sized_by_the_processs_own_rate_and_capped_by_its_share() -> None:
    a = Allowance((1000, 0), SIZE)
    a.replied(sent=START, redis_now=START, day=0, count=0, tokens=0, reset=0, block=(START // SIZE, 0, 0))
    a.note(START // SIZE - 1, 40, 0)  # 40 in the last bucket
    n, _ = a.want(START)
    assert n == 40  # a whole bucket ahead at that rate
    w = TeamWindow()
    bucket, granted, _ = window.grant(w, TeamQuota(rpm=1000), now=START, window=W, requests=n, tokens=0, processes=4)
    assert granted == 40
    window.admit(w, TeamQuota(rpm=1000), now=START, window=W, lease=US, est=0, rid="x")
    for i in range(949):  # near the limit: 10 left, 4 processes: a share under 2
        assert window.admit(w, TeamQuota(rpm=1000), now=START, window=W, lease=US, est=0, rid=f"r{i}").ok
    assert w.buckets[bucket][0] == 990
    assert window.grant(w, TeamQuota(rpm=1000), now=START, window=W, requests=40, tokens=0, processes=4)[1] == 0


def test_a_bill_is_settled_in_the_block_while_its_bucket_is_held() -> None:
    """Allowance.settle: a bill under the estimate goes back to the block, one over it comes from the block
    when it has the tokens; the block's rest (with them) goes back to its bucket; after the bucket's end, or
    for another bucket, or when the block cannot cover the bill, nothing changes and Redis settles it."""
    a = Allowance((1000, 10_000), SIZE)
    b = START // SIZE
    a.replied(sent=START, redis_now=START, day=0, count=5, tokens=100, reset=W, block=(b, 5, 100))
    v = a.take(40, START + 10)
    assert v is not None and (a.requests, a.tokens) == (4, 60)
    assert a.settle(b, 40, 10, START + 20) == (1, 10, W - 20)  # 30 back: the window holds the bill
    assert a.tokens == 90
    assert a.settle(b, 40, 100, START + 30) == (1, 70, W - 30)  # 60 over the estimate, from the block
    assert a.tokens == 30
    assert a.settle(b, 0, 31, START + 40) is None  # more than the block holds
    assert a.settle(b + 1, 40, 10, START + 40) is None  # another bucket's request
    assert a.settle(b, 40, 10, a.until) is None  # the bucket ended
    assert a.tokens == 30
    a.retire()
    assert a.giving_back(b) == [b, 4, 30]


def test_a_request_taken_from_a_block_is_dated_in_the_blocks_bucket() -> None:
    """The block's end is judged from the reply that granted it; a later reply granting nothing (a request
    decided by Redis) may have been sent longer before Redis ran it, so that Redis's clock estimated from it
    runs further ahead. A request taken from the block in its last moments is still admitted in the block's
    bucket (Redis counted it there), and its ticket must say so: dated in the next bucket, its refund went to
    that bucket's finish (nothing there: lost) and the block's bucket kept the estimate."""
    q = TeamQuota(tpm=10_000)
    sim = Sim(q, [0])
    start = (START // SIZE) * SIZE
    sim.request(0, start + 10, 0, 40)  # decided by Redis (no reply yet to size a block)
    sim.request(0, start + 20, 0, 40)  # a block granted, sent as Redis ran it
    a = sim.allow[0]
    assert a.bucket == start // SIZE and a.tokens >= 40
    sim.call(0, start + 30, 3_000, [a.tokens + 1], ask=False)  # too large for the block; sent 3 ms before
    taken = a.take(40, start + SIZE - 1_500)  # 1.5 ms before the bucket's end, on Redis's clock too
    assert taken is not None
    assert taken.now_us // SIZE == start // SIZE
    sim.record(start + SIZE - 1_500, 10)
    assert a.settle(taken.now_us // SIZE, 40, 10, start + SIZE - 1_500) is not None
    a.retire()
    sim.call(0, start + SIZE, 0, [], ask=False)
    for b, (count, used) in sim.w.buckets.items():
        assert (count, used) == (sim.per_bucket[b], sim.tokens_per_bucket[b])
