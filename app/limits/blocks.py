"""Blocks: the allowances (allowance.py) of every team this process holds, with their prefetches, renewals and
give-backs, for the Redis store (shared.py), which makes the script calls.

Only teams limited by rpm/tpm alone get blocks: a concurrency lease or the day's tokens are decided per
request. A reload that changes a team's limits drops its block (its rest goes back with the next call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .allowance import Allowance, monotonic_us
from .store import Ticket
from .window import US, Verdict

Limits = tuple[int, int, int, int]  # rpm, tpm, concurrency, daily tokens (0: not limited)
Call = Callable[[str, Limits, list[tuple[str, int]]], Awaitable[Any]]  # the team's script call (shared.py)
MAX_TEAMS = 1024


class Blocks:
    def __init__(self, size: int, call: Call, *, on: bool) -> None:
        self.size = size  # a bucket, in us
        self.call = call
        self.on = on
        self.held: dict[str, Allowance] = {}  # team -> its allowance in this process
        self.timers: dict[str, asyncio.TimerHandle] = {}  # team -> its renewal at the block's bucket end
        self.tasks: set[asyncio.Task[Any]] = set()  # prefetches and renewals on their way
        self.closing = False

    def eligible(self, limits: Limits) -> bool:
        rpm, tpm, concurrency, daily = limits
        return self.on and not concurrency and not daily and bool(rpm or tpm)

    def of(self, team: str, limits: Limits) -> Allowance | None:
        """The team's allowance (None: no blocks for these limits). While closing, only the one held: the calls
        of `close` give its rest back through it (`asking`), and no block is made or asked for."""
        if not self.eligible(limits):
            return None
        rpm, tpm, _, _ = limits
        allowance = self.held.get(team)
        if self.closing:
            return allowance
        if allowance is None or allowance.limits != (rpm, tpm):
            if len(self.held) >= MAX_TEAMS:
                self.held.clear()  # their blocks count as used until they leave the window
            new = Allowance((rpm, tpm), self.size)
            if allowance is not None:  # a reload changed the limits: the old block goes back
                allowance.retire()
                new.back = allowance.back
            allowance = self.held[team] = new
        return allowance

    def unused(self, team: str, redis_now: int) -> tuple[int, int]:
        """Requests and tokens of the team's block not used yet (counted in Redis as admitted) that were
        granted before Redis's time `redis_now` (a decision's counts hold those, not the later ones)."""
        allowance = self.held.get(team)
        if allowance is None or monotonic_us() >= allowance.until:
            return 0, 0
        return allowance.unused_at(redis_now)

    def take(self, team: str, limits: Limits, est: int) -> Verdict | None:
        """Admit the request from the team's block, asking for the next block at half of this one; None: Redis
        decides it, and what is left of the block goes back in that call (so that this process's own block
        never refuses its request: near the limit every request is Redis's, exactly)."""
        allowance = None if self.closing else self.of(team, limits)
        if allowance is None:
            return None
        mono = monotonic_us()
        verdict = allowance.take(est, mono)
        if verdict is None:
            allowance.retire()
        elif allowance.low(mono) and allowance.want(mono)[0]:
            self._spawn(self.call(team, limits, []))  # prefetch
        return verdict

    def settle(self, ticket: Ticket, billed: int) -> tuple[int, int, int] | None:
        """A request admitted from its team's block (`ticket.block`), finished in that block while its bucket lasts,
        without a call (Allowance.settle): the window's requests, tokens and reset after it, as the finish script
        answers; None: the finish script settles it."""
        allowance = self.held.get(ticket.team)
        if allowance is None or not ticket.block:
            return None
        return allowance.settle(ticket.at_us // self.size, ticket.est, billed, monotonic_us())

    def asking(self, allowance: Allowance, mono: int) -> tuple[tuple[int, int], list[int]]:
        """What a call of the team now asks (a block, unless one is asked already) and gives back."""
        now = allowance.now(mono)
        back = allowance.giving_back(now // self.size if now else 0)
        ask = (0, 0) if self.closing else allowance.want(mono)
        allowance.asking = allowance.asking or ask[0] > 0
        return ask, back

    def replied(self, team: str, allowance: Allowance, sent: int, r: list[Any], asked: list[tuple[str, int]]) -> None:
        """Learn from a reply of the team's script: its block if one was granted, and what was admitted (the
        rate that sizes the next block); start the block's renewal at its bucket's end."""
        now, day, bucket, n, t, count, tokens, reset = r[:8]
        if self.held.get(team) is not allowance:  # dropped meanwhile (a reload): the block goes back
            allowance = self.held.get(team) or allowance
            if n > 0:
                back = allowance.back.setdefault(bucket, [0, 0])
                back[0] += n
                back[1] += t
            return
        for row, (_, est) in zip(r[8:], asked, strict=True):
            if row[0] == 1:
                allowance.note(now // self.size, 1, est)
        had = allowance.bucket if allowance.until else None
        allowance.replied(
            sent=sent, redis_now=now, day=day, count=count, tokens=tokens, reset=reset, block=(bucket, n, t)
        )
        if n > 0 and (had != bucket or team not in self.timers) and not self.closing:
            old = self.timers.pop(team, None)
            if old is not None:
                old.cancel()
            mono = monotonic_us()
            delay = max(0, allowance.ends_by(mono - sent) - mono) / US
            self.timers[team] = asyncio.get_running_loop().call_later(delay, self._renew, team, allowance)

    def _renew(self, team: str, allowance: Allowance) -> None:
        """The block's bucket ended: give its rest back at once, and ask for the next bucket's block while the
        team is busy here (so that its requests do not wait for one)."""
        self.timers.pop(team, None)
        if self.held.get(team) is not allowance or self.closing:
            return
        mono = monotonic_us()
        if mono >= allowance.until:
            allowance.retire()
        if allowance.back or allowance.want(mono)[0]:
            rpm, tpm = allowance.limits
            self._spawn(self.call(team, (rpm, tpm, 0, 0), []))

    def _spawn(self, call: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(call)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a prefetch or renewal that failed: the next request asks Redis itself

    async def close(self, timeout_s: float) -> None:
        """Give back what is left of every block held (a process killed instead leaves its blocks counted as
        used until they leave the window): the calls on their way are waited for, then one call per team."""
        self.closing = True
        for timer in self.timers.values():
            timer.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout_s)
        backs = []
        for team, allowance in self.held.items():
            allowance.retire()
            rpm, tpm = allowance.limits
            if allowance.back:
                backs.append(asyncio.ensure_future(self.call(team, (rpm, tpm, 0, 0), [])))
        if backs:
            await asyncio.wait(backs, timeout=timeout_s)
            for task in backs:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()
        self.held.clear()
