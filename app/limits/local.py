"""The in-process limit store: the reference arithmetic of window.py and pacing.py on this process's clock.

Serves alone when no Redis is configured (a single replica), and as the fallback while Redis fails; in
both cases it is given limits already divided by the number of processes sharing them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from . import pacing, window
from .pacing import Grant, Pace, PaceState
from .store import Ticket
from .window import US, TeamQuota, TeamWindow, Verdict


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class LocalStore:
    name = "local"

    def __init__(self, *, window_s: float, lease_s: float, clock: Callable[[], int] = wall_clock_us) -> None:
        self.window = round(window_s * US)
        self.lease = round(lease_s * US)
        self.clock = clock
        self._teams: defaultdict[str, TeamWindow] = defaultdict(TeamWindow)
        self._accounts: defaultdict[str, PaceState] = defaultdict(PaceState)

    async def sync_clock(self) -> bool:
        return True

    async def admit(self, team: str, quota: TeamQuota, est: int, rid: str) -> Verdict:
        w = self._teams[team]
        return window.admit(w, quota, now=self.clock(), window=self.window, lease=self.lease, est=est, rid=rid)

    async def finish(self, ticket: Ticket, billed: int) -> tuple[int, int, int]:
        w = self._teams[ticket.team]
        return window.finish(
            w,
            now=self.clock(),
            window=self.window,
            rid=ticket.rid,
            est=ticket.est,
            at=ticket.at_us,
            day=ticket.day,
            billed=billed,
        )

    async def reserve(self, account: str, pace: Pace, tokens: int, max_wait_us: int) -> Grant:
        return pacing.reserve(self._accounts[account], pace, now=self.clock(), tokens=tokens, max_wait=max_wait_us)

    async def adjust(self, account: str, pace: Pace, delta_tokens: int) -> None:
        pacing.adjust(self._accounts[account], pace, delta_tokens=delta_tokens)

    async def close(self) -> None:
        self._teams.clear()
        self._accounts.clear()
