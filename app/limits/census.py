"""Census: how many gateway processes share the limits right now, learnt from heartbeats in Redis.

Every process beats every `interval_s` into one sorted set (`{NS:procs}`: member = the process's id, score =
when its beat expires, on Redis's clock) and reads back the number of live members in the same script.
While Redis answers, the local fallback is not used; when Redis goes down, each process divides its limits by
the last count it learnt, which follows the autoscaler (a process that stopped beating leaves the count
after `3 x interval_s`). `floor` (the REPLICAS setting times this replica's workers) is the least it
divides by: what an operator knows even before the first heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from ..metrics import Metrics
from ..redis.link import FAILURES, RedisLink

log = logging.getLogger("embedding_gateway.limits")

BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""
LEAVE = "return redis.call('ZREM', KEYS[1], ARGV[1])"


class Census:
    def __init__(
        self, link: RedisLink | None, *, namespace: str, floor: int, interval_s: float, metrics: Metrics | None = None
    ) -> None:
        self.link = link
        self.metrics = metrics
        self.key = f"{{{namespace}:procs}}"
        self.floor = max(1, floor)
        self.interval_s = interval_s
        self.member = uuid.uuid4().hex
        self.live = 0  # processes seen by the last heartbeat (0: none yet)
        self._task: asyncio.Task[None] | None = None
        self.answered: Callable[[], None] | None = None  # called after each heartbeat Redis answered

    @property
    def shares(self) -> int:
        """The number of processes a limit is divided by when this process decides alone."""
        return max(self.floor, self.live)

    async def beat(self) -> bool:
        if self.link is None:
            return False
        ttl_ms = max(1, round(self.interval_s * 3000))
        try:
            count = await asyncio.wait_for(self.link.run(BEAT, [self.key], [self.member, ttl_ms]), self.interval_s)
        except FAILURES:
            return False  # the limits' own bypass logs Redis failing; the last count stays
        if int(count) != self.live:
            log.info("limits shared by %d live gateway processes", int(count))
        self.live = int(count)
        if self.metrics:
            self.metrics.limits_processes.set(self.live)
        if self.answered is not None:
            self.answered()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat()

    async def start(self) -> None:
        if self.link is not None:
            await self.beat()
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.link is not None:
            with contextlib.suppress(*FAILURES):
                await asyncio.wait_for(self.link.run(LEAVE, [self.key], [self.member]), self.interval_s)
