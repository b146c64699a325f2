"""The Redis limit store: every decision is one Lua script (see the .lua files beside this module), run
atomically on Redis's clock, so that replicas with skewed clocks still decide alike.

Keys carry a hash tag per team (`{eg:team:NAME}:meta|lease`) and per upstream account
(`{eg:quota:UPSTREAM:MODEL}`): every script touches one Redis Cluster slot. The state must never be
evicted (use a Redis, or a database, with `maxmemory-policy noeviction`; see docs/limits.md).

While Redis answers, a decision waits for its reply within the request's budget (`budget_s`): a slow reply,
from a busy Redis or from this process's own busy event loop, is waited for, not replaced by a local
decision. Redis counts as failing when it errs, or when no reply at all (to any decision of this process)
came back within `timeout_s` while this one waited: a stalled server, not a slow process. Each call
carries a deadline in Redis time (half of `timeout_s` after it was sent, on Redis's clock as learnt from
earlier replies), so a script that Redis reaches only after the caller may have given up (a stalled or
paused server) charges nothing. A script that finds its deadline passed charged nothing and answers
"late": it is sent again while the budget lasts. A call that failed or was abandoned is never retried.

The admissions of one team made by this process in one event-loop turn go to Redis together, as one script
call that decides each in its order as if alone (tickbatch.py): Redis's CPU per call is mostly the call
itself (the round trip, the script's start, reading and writing the team's hash), not the requests in it,
so under load a limited request costs Redis a fraction of a call. Each request is still decided atomically
against everything admitted before it, in every process: "never more than N in any window" is unchanged.
The finishes of one team of one turn go together likewise (the misses that one upstream answer ended),
each settled in its order as if alone.

Both are made by the batch's task, not the callers': a caller cancelled while it waits (a client gone, a
request past its deadline) leaves the call to complete, so a finish still frees its lease and settles its
tokens. The batch's task awaits the script directly (stall.py: one timer for the calls in flight). So does
the upstream quota's reserve: its caller is an upstream call's own task (flights/batcher.py), which no
request's cancellation reaches either. Its adjust, made by a request's task once the upstream billed it,
runs in a task of its own (`_detached`) for the same reason.

A team refused for its requests limit is refused again by this process, without asking Redis, until the
time Redis named (envoy's ratelimit keeps such a cache of keys over their limit): a window's request count
only goes down when its buckets leave the window, or when a process gives back the rest of a block, so no
request would pass in Redis before then either, but for those blocks; for a team that may have blocks the
cache lasts at most to the end of the current bucket (when they are given back), so a flooding team costs
Redis one call per process per bucket. Nothing is ever admitted from this cache, so "never more than N in
any window" holds as before. Its times are compared on an estimate of Redis's clock that runs ahead of it
(the offset learnt is an upper bound), so the local refusals end no later than Redis's would. Keyed by the
team and its rpm (a reload that changes the limit asks Redis again).

Teams limited by rpm/tpm alone (no concurrency, no daily tokens) are admitted from blocks this process holds
(allowance.py): most of their requests make no call at all; the script call that decides a request alone
also gives back the rest of the team's past blocks and asks for the next one; their bills are settled there too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from functools import partial
from importlib import resources
from typing import Any

from ..cache.tickbatch import TickBatcher
from ..redis.cause import cause
from ..redis.link import FAILURES, RedisLink, single
from ..redis.stall import Stalls
from .allowance import monotonic_us
from .blocks import Blocks, Limits
from .local import wall_clock_us
from .pacing import Grant, Pace
from .store import StoreLate, StoreUnavailable, Ticket
from .window import US, TeamQuota, Verdict, bucket_us

SCRIPTS = ("team_admit", "team_finish", "quota_reserve", "quota_adjust")
ADMITS_PER_CALL = 256  # requests decided by one script call at most (a turn with more makes several, in order)
FINISHES_PER_CALL = 256  # likewise for the requests finished by one call

Decided = tuple[list[Any], int, int]  # a request's row of team_admit's reply, Redis's now and day


def script_source(name: str) -> str:
    """The script `name` with clock.lua (its `now` and stale check) in front, and for the team scripts
    buckets.lua (a team's counters per bucket)."""
    files = resources.files(__package__)
    parts = ["clock.lua", "buckets.lua", f"{name}.lua"] if name.startswith("team_") else ["clock.lua", f"{name}.lua"]
    return "".join(files.joinpath(part).read_text() for part in parts)


def open_client(url: str, timeout_s: float, max_connections: int = 64) -> RedisLink:
    """A single server's link, without asking it anything (tests; the gateway uses redislink.connect)."""
    return single(url, timeout_s, max_connections)


class RedisStore:
    name = "redis"

    def __init__(
        self,
        link: RedisLink,
        *,
        namespace: str,
        window_s: float,
        lease_s: float,
        timeout_s: float,
        budget_s: float | None = None,
        clock: Callable[[], int] | None = None,
        processes: Callable[[], int] = lambda: 1,
        blocks: bool | None = None,
    ) -> None:
        self.link = link
        self.client = link.client
        self.namespace = namespace
        self.window = round(window_s * US)
        self.lease = round(lease_s * US)
        self.timeout_s = timeout_s
        self.budget_s = max(budget_s or timeout_s, timeout_s)
        self._stalls = Stalls(link, timeout_s)
        self.clock = clock  # tests only: decisions then use this clock instead of Redis TIME
        self._scripts = {n: script_source(n) for n in SCRIPTS}
        self._offset: int | None = None  # Redis time minus this process's time, learnt from replies
        self._over: dict[tuple[str, int], tuple[Verdict, int]] = {}  # (team, rpm) -> refusal, until (Redis time)
        self._admits: dict[tuple[str, Limits], TickBatcher[tuple[str, int], Decided]] = {}
        self._finishes: dict[str, TickBatcher[tuple[Ticket, int], tuple[int, int, int]]] = {}
        self.processes = processes  # live processes sharing the limits (the census): a block is a share of the rest
        # The blocks of teams' limits this process holds (an injected clock: decisions one by one)
        self.blocks = Blocks(bucket_us(self.window), self._admit_now, on=clock is None if blocks is None else blocks)
        self.settle = self.blocks.settle  # a block-admitted request's finish, made in its block while held (no call)

    def team_keys(self, team: str) -> list[str]:
        tag = f"{{{self.namespace}:team:{team}}}"
        return [f"{tag}:meta", f"{tag}:lease"]

    def account_key(self, account: str) -> str:
        return f"{{{self.namespace}:quota:{account}}}"

    def _clock_args(self, sent: int) -> list[Any]:
        if self.clock is not None:
            return [self.clock(), 0]
        if self._offset is None:
            return ["", 0]
        # Redis must run the script within half the stall timeout: the caller waits at least the whole of
        # it, so a script that runs is one whose reply the caller still awaits (the other half covers the
        # reply's way back and an overestimated offset). Later, it charges nothing and answers "late".
        return ["", sent + self._offset + round(self.timeout_s * US / 2)]

    def _learn(self, redis_now: int, sent: int) -> None:
        # Redis ran the script after we sent it: redis_now - sent is an upper bound of the clock offset.
        # An upper bound only makes deadlines more lenient, never refuses a script that ran in time
        # (measuring at receipt instead would let a busy event loop make every reply look late).
        if self.clock is None:
            self._offset = redis_now - sent

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[list[Any], int]:
        """The script's reply (and when it was sent), awaited in this task: the admissions' and the finishes'
        batch tasks (tickbatch.py) and the upstream calls' (the quota's reserve), which no request's
        cancellation reaches; a call made by a request's task goes through `_detached`."""
        end = time.monotonic() + self.budget_s
        while time.monotonic() < end:
            sent = wall_clock_us()
            reply = await self._await(self.link.run(self._scripts[name], keys, [*self._clock_args(sent), *args]), end)
            if not isinstance(reply, list) or not reply:
                raise StoreUnavailable("unexpected reply")
            if reply[0] != -1:
                return reply, sent
        raise StoreLate("late")  # Redis answered every time, but never within this process's deadline

    async def _detached(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[list[Any], int]:
        """`_run` in a task of its own, for a caller that may be cancelled (the upstream quota's adjust, made by
        a request's task): its script still completes, retried while late as for any caller."""
        return await asyncio.shield(asyncio.ensure_future(self._run(name, keys, args)))

    async def _await(self, call: Coroutine[Any, Any, Any], end: float) -> Any:
        """The reply, waited for in slices of `timeout_s` while Redis keeps answering (some reply came back
        during the slice) and the budget lasts; otherwise Redis counts as failing (stall.py)."""
        try:
            return await self._stalls.waited(call, end)
        except FAILURES as exc:
            raise StoreUnavailable(cause(exc)) from None

    async def sync_clock(self) -> bool:
        """Learn Redis's clock before the first decision, so that even that one carries a deadline."""
        sent = wall_clock_us()
        try:
            async with self.link.room():
                seconds, micros = await asyncio.wait_for(self.client.time(), self.timeout_s)
        except FAILURES:
            return False
        self._learn(seconds * US + micros, sent)
        return True

    def take(self, team: str, quota: TeamQuota, est: int) -> Verdict | None:
        limits: Limits = (quota.rpm or 0, quota.tpm or 0, quota.concurrency or 0, quota.daily_tokens or 0)
        return self.blocks.take(team, limits, est)

    async def admit(self, team: str, quota: TeamQuota, est: int, rid: str) -> Verdict:
        limits: Limits = (quota.rpm or 0, quota.tpm or 0, quota.concurrency or 0, quota.daily_tokens or 0)
        verdict = self.blocks.take(team, limits, est)
        if verdict is not None:
            return verdict
        over = self._still_over(team, quota.rpm)
        if over is not None:
            return over
        batch = self._admits.get((team, limits))
        if batch is None:  # one per team and limits: a reload that changes them starts another
            if len(self._admits) >= 1024:
                self._admits.clear()
            batch = self._admits[(team, limits)] = TickBatcher(lambda reqs: self._admit_now(team, limits, reqs))
        [(r, now, day)] = await batch([(rid, est)])
        ok, reason, large, retry, requests, tokens, reset, rpm_retry = r
        unused = self.blocks.unused(team, now)  # this process's block counts in Redis: not used yet
        requests, tokens = requests - unused[0], tokens - unused[1]
        why = reason.decode() if reason else None
        verdict = Verdict(ok == 1, why, large == 1, retry, requests, tokens, reset, now, day)
        if rpm_retry > 0 and quota.rpm and self.clock is None:
            if len(self._over) >= 1024:
                self._over.clear()
            until = now + rpm_retry
            if self.blocks.eligible(limits):  # other processes' blocks go back at their bucket's end: ask then
                size = bucket_us(self.window)
                until = min(until, (now // size + 1) * size + size // 10)
            refusal = replace(verdict, reason="requests", too_large=False, retry_us=rpm_retry)
            self._over[(team, quota.rpm)] = (refusal, until)
        return verdict

    async def _admit_now(self, team: str, limits: Limits, requests: list[tuple[str, int]]) -> list[Decided]:
        """The admissions of one loop turn, in their order: one script call (per ADMITS_PER_CALL). The first
        call also gives back the rest of the team's past blocks and asks for a new one, if this process has
        use for it and no other call asks already (blocks.py)."""
        out: list[Decided] = []
        allowance = self.blocks.of(team, limits)
        for at in range(0, max(1, len(requests)), ADMITS_PER_CALL):
            ask, mono = (0, 0), monotonic_us()
            back: list[int] = []
            if allowance is not None and at == 0:
                ask, back = self.blocks.asking(allowance, mono)
            if not back and not ask[0] and not requests:
                break
            chunk = requests[at : at + ADMITS_PER_CALL]
            args: list[Any] = [self.window, self.lease, *limits, *ask, self.processes(), len(back) // 3, *back]
            for rid, est in chunk:
                args += (rid, est)
            try:
                r, sent = await self._run("team_admit", self.team_keys(team), args)
            finally:
                if allowance is not None and ask[0]:
                    allowance.asking = False
            now, day = r[0], r[1]
            self._learn(now, sent)
            if allowance is not None:
                self.blocks.replied(team, allowance, mono, r, chunk)
            out += ((row, now, day) for row in r[8:])
        return out

    def _still_over(self, team: str, rpm: int | None) -> Verdict | None:
        """The last refusal of the team for its requests limit, while it lasts (on Redis's clock, estimated
        ahead of it), with the time left."""
        if not rpm or self._offset is None:
            return None
        over = self._over.get((team, rpm))
        if over is None:
            return None
        was, until = over
        now = wall_clock_us() + self._offset
        left = was.now_us + was.retry_us - now
        if now >= until:
            del self._over[(team, rpm)]
            return None
        return replace(was, retry_us=left, reset_us=max(0, was.reset_us - (now - was.now_us)), now_us=now)

    async def finish(self, ticket: Ticket, billed: int) -> tuple[int, int, int]:
        """The request's finish, sent with the team's other finishes of this loop turn in one script call
        made by a task of its own: a caller cancelled while it waits leaves the finish to complete."""
        batch = self._finishes.get(ticket.team)
        if batch is None:
            if len(self._finishes) >= 1024:
                self._finishes.clear()
            batch = self._finishes[ticket.team] = TickBatcher(partial(self._finish_now, ticket.team))
        [(requests, tokens, reset)] = await batch([(ticket, billed)])
        return requests, tokens, reset

    async def _finish_now(self, team: str, finishes: list[tuple[Ticket, int]]) -> list[tuple[int, int, int]]:
        """The finishes of one loop turn, in their order (per FINISHES_PER_CALL): each caller gets the window
        as it stands after its own finish, as if the finishes had been made one by one."""
        out: list[tuple[int, int, int]] = []
        for at in range(0, len(finishes), FINISHES_PER_CALL):
            chunk = finishes[at : at + FINISHES_PER_CALL]
            args: list[Any] = [self.window, len(chunk)]
            for ticket, billed in chunk:
                args += (ticket.rid, ticket.est, ticket.at_us, ticket.day, billed)
            (requests, reset, now, *tokens), _ = await self._run("team_finish", self.team_keys(team), args)
            unused = self.blocks.unused(team, now)  # this process's block counts in Redis: not used yet
            out += ((requests - unused[0], t - unused[1], reset) for t in tokens)
        return out

    async def reserve(self, account: str, pace: Pace, tokens: int, max_wait_us: int) -> Grant:
        args = [repr(pace.request_us), repr(pace.token_us), tokens, max_wait_us]
        (ok, wait, now), sent = await self._run("quota_reserve", [self.account_key(account)], args)
        self._learn(now, sent)
        return Grant(ok == 1, wait, now)

    async def adjust(self, account: str, pace: Pace, delta_tokens: int) -> None:
        await self._detached("quota_adjust", [self.account_key(account)], [repr(pace.token_us), delta_tokens])

    async def close(self) -> None:
        await self.blocks.close(self.timeout_s)
        await self.link.close()
