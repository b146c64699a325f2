"""Desks: how many of a team's management requests (files, batches, DashScope tasks, usage and costs: listings,
lookups, reports, creations) one process serves at once. Past `per_team`, the next is a 429 at once, before
any work, so that one team looping on them cannot take the process's CPU from every other team.

A team's rate limits (`rpm`, `concurrency`: window.py) count its embedding requests: a batch's poll must not
spend them, nor wait behind the team's own embeddings. What one of these costs is a worker's CPU (a listing
of 10,000 files is ~50 ms of it), and the event loop turns between the awaits of every request in progress,
so a team's share of the process is about its number of requests in progress: that is what is bounded, in
the process that pays. A client polling one request after another never meets the bound; uploads and
downloads of files and results are outside it (long, and bound by the memory budget's team share instead).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RateLimited
from ..metrics import Metrics

RETRY_AFTER_S = 1.0


class Desks:
    def __init__(self, per_team: int, metrics: Metrics) -> None:
        self.per_team = per_team
        self.metrics = metrics
        self.busy: dict[str, int] = {}  # team -> its requests in progress; a team leaves when it has none

    def take(self, team: str) -> Callable[[], None]:
        """A desk for `team`'s request, and the call that gives it back (once, when the request ends); 429
        when the team's requests in progress are `per_team` already."""
        busy = self.busy.get(team, 0)
        if busy >= self.per_team:
            m = self.metrics
            m.ratelimit_rejections.labels(m.team(team), "management").inc()
            raise RateLimited(
                f"team {team}: {self.per_team} file, batch, task or usage requests of the team are in progress "
                "on this server already (management_concurrency); retry after the Retry-After delay",
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
