"""Slots: how many batches (and tasks) of one team run at once, across every replica (`team_max_running`).

All teams' batches wait in one first-in, first-out queue, and a batch keeps its worker until it ends: with
no cap, a team that queued many large batches would make every other team's batch wait behind all of them.
A batch takes a slot of its team before it runs: one script on a sorted set of the team's running batches,
each scored by when its claim lapses (Redis's clock), renewed by the run's heartbeat, so a dead worker's slot
frees itself. A batch that finds its team's slots taken is not run: its job ends, the batch stays as it was
(validating, or where its last run stopped). When a batch of the team ends, its oldest unfinished batches
that are not running are queued again, as many as slots are free (saq keeps one job per batch id: a batch
queued or running already is not queued twice); the files sweep does the same for every team with
unfinished batches, for a worker that died before it could.
"""

from __future__ import annotations

from redis.asyncio import Redis

CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""
# the team's claims: lapsed ones dropped, the rest listed
RUNNING = """
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class Slots:
    def __init__(self, redis: Redis, namespace: str, cap: int, lapse_s: float) -> None:
        self.redis = redis
        self.ns = namespace
        self.cap = cap
        self.lapse_ms = max(1, int(lapse_s * 1000))
        self._claim = redis.register_script(CLAIM)
        self._running = redis.register_script(RUNNING)

    def key(self, team: str) -> str:
        return f"{self.ns}:running:{team}"

    async def claim(self, team: str, bid: str) -> bool:
        """A slot for `bid` (renewed when it holds one already); False while the team's slots are taken."""
        return int(await self._claim(keys=[self.key(team)], args=[bid, self.cap, self.lapse_ms])) == 1

    async def release(self, team: str, bid: str) -> None:
        await self.redis.zrem(self.key(team), bid)

    async def running(self, team: str) -> set[str]:
        """The team's batches holding a slot now (lapsed claims dropped)."""
        ids = await self._running(keys=[self.key(team)])
        return {i.decode() if isinstance(i, bytes) else str(i) for i in ids}
