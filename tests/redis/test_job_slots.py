"""A team's running-batch slots on a real redis-server (app/jobs/slots.py): the cap holds across
processes (two Slots on one Redis), a claim held is renewed, not counted twice, and a slot whose holder
stopped renewing frees itself after its lapse."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from app.jobs.slots import Slots
from tests.support.processes import RedisServer


def test_a_teams_slots_are_capped_across_processes_and_lapse(redis_server: RedisServer) -> None:
    async def run() -> None:
        ns = "t" + uuid.uuid4().hex[:10]
        one_redis, two_redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
        one, two = Slots(one_redis, ns, cap=2, lapse_s=0.5), Slots(two_redis, ns, cap=2, lapse_s=0.5)
        try:
            assert await one.claim("alpha", "b1") and await two.claim("alpha", "b2")
            assert not await one.claim("alpha", "b3") and not await two.claim("alpha", "b3")
            assert await two.claim("alpha", "b1")  # held: renewed, still two
            assert await one.running("alpha") == {"b1", "b2"}
            assert await one.claim("beta", "c1")  # another team's slots are its own
            await two.release("alpha", "b2")
            assert await one.claim("alpha", "b3") and not await two.claim("alpha", "b4")
            for _ in range(3):  # b1 renewed, b3 not
                await asyncio.sleep(0.2)
                assert await one.claim("alpha", "b1")
            assert await two.running("alpha") == {"b1"}  # b3's holder went silent: its slot lapsed
            assert await two.claim("alpha", "b4") and not await two.claim("alpha", "b5")
        finally:
            await one_redis.aclose()
            await two_redis.aclose()

    asyncio.run(run())
