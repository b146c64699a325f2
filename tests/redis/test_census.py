"""Census: live gateway processes counted by heartbeats in a real Redis (single and cluster), the count
following processes that leave or stop beating, and the floor holding when Redis never answered."""

from __future__ import annotations

import asyncio
import uuid

from app.limits.census import Census
from app.redis.link import connect
from tests.support.polling import eventually_async
from tests.support.processes import RedisServer
from tests.support.redisfarm import Cluster


async def _count_follows_processes(url: str) -> None:
    ns = "c" + uuid.uuid4().hex[:8]
    links = [await connect(url, timeout_s=2.0, max_connections=2) for _ in range(3)]
    procs = [Census(link, namespace=ns, floor=1, interval_s=0.2) for link in links]
    try:
        for p in procs:
            await p.start()
        await eventually_async(lambda: [p.shares for p in procs] == [3, 3, 3], within=5)
        await procs[0].close()  # leaves at once
        await eventually_async(lambda: procs[1].shares == procs[2].shares == 2, within=5)
        assert procs[1]._task is not None
        procs[1]._task.cancel()  # stops beating without leaving (a killed process)
        await eventually_async(lambda: procs[2].shares == 1, within=5)  # once its beat expires (3 x 0.2 s)
        assert Census(links[0], namespace=ns, floor=4, interval_s=0.2).shares == 4  # the floor, before any beat
    finally:
        for p in procs[1:]:
            await p.close()
        for link in links:
            await link.close()


def test_census_single(redis_server: RedisServer) -> None:
    asyncio.run(_count_follows_processes(redis_server.url))


def test_census_cluster(redis_cluster: Cluster) -> None:
    asyncio.run(_count_follows_processes(redis_cluster.url))


def test_census_without_redis_uses_the_floor() -> None:
    async def go() -> None:
        census = Census(None, namespace="x", floor=2, interval_s=0.2)
        await census.start()
        assert not await census.beat()
        assert census.shares == 2
        await census.close()

    asyncio.run(go())
