"""Desks: how many of a team's requests of one kind one process serves at once. Past `per_team`, the next is a
429 at once, before any work, so that one team cannot take the process's event loop from every other team.

Two kinds (app/wiring/parts.py makes one Desks of each):
- management: files, batches, DashScope tasks, usage and costs (listings, lookups, reports, creations). A
  listing of 10,000 files is ~50 ms of a worker's CPU;
- transfers: uploads and downloads of job files and task results. A download read at loopback speed is a
  chunk written every loop turn: 128 of one team's took another team's hits from 2.5 to 84 ms (p50).
A team's rate limits (`rpm`, `concurrency`: window.py) count its embedding requests: a batch's poll must not
spend them, nor wait behind the team's own embeddings. What these cost is a worker's event loop, which turns
between the awaits of every request in progress, so a team's share of the process is about its number of
requests in progress: that is what is bounded, in the process that pays. A client polling or downloading
one request after another never meets the bound.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RateLimited
from ..metrics import Metrics

RETRY_AFTER_S = 1.0


class Desks:
    def __init__(self, per_team: int, metrics: Metrics, *, kind: str, what: str, setting: str) -> None:
        """`kind`: the `limit` label of the refusals' metric; `what` and `setting`: the refusal's words."""
        self.per_team = per_team
        self.metrics = metrics
        self.kind, self.what, self.setting = kind, what, setting
        self.busy: dict[str, int] = {}  # team -> its requests in progress; a team leaves when it has none

    def take(self, team: str) -> Callable[[], None]:
        """A desk for `team`'s request, and the call that gives it back (once, when the request ends); 429
        when the team's requests in progress are `per_team` already."""
        busy = self.busy.get(team, 0)
        if busy >= self.per_team:
            m = self.metrics
            m.ratelimit_rejections.labels(m.team(team), self.kind).inc()
            raise RateLimited(
                f"team {team}: {self.per_team} {self.what} of the team are in progress on this server already "
                f"({self.setting}); retry after the Retry-After delay",
                retry_after=RETRY_AFTER_S,
            )
        self.busy[team] = busy + 1
        given = False

        def give_back() -> None:
            nonlocal given
            if given:
                return
            given = True
            left = self.busy[team] - 1
            if left:
                self.busy[team] = left
            else:
                del self.busy[team]

        return give_back
