"""Redis paused (SIGSTOP) and resumed under load, with two gateway processes sharing a team's limit.

Policy `local` (the default): while Redis does not answer, each process enforces the limit divided by the
number of processes (40 / 2 = 20 each), never multiplied; no request waits more than the short Redis
timeout; once Redis answers again, the limit is shared again, counting what was admitted before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.polling import eventually_async
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, stop
from tests.support.teamkit import Reply, embedding, fire, write_config

LIMIT = 40


@pytest.fixture(scope="module")
def pair(
    gateways: GatewayFactory, own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Gateway], str]]:
    cfg = Path(tmp_path_factory.mktemp("outage")) / "gateway.yaml"
    limits = {"limits_timeout_s": 0.2, "limits_retry_after_s": 1.0, "limits_heartbeat_s": 0.5, "replicas": 2}
    keys = write_config(cfg, {"outage": {"rpm": LIMIT}}, **limits)
    started = [gateways.start(redis_url=own_redis.url, config=str(cfg)) for _ in range(2)]
    yield started, keys["outage"]
    for g in started:
        stop(g.proc)


def ok_by_gateway(replies: list[Reply]) -> list[int]:
    return [sum(1 for r in replies if r.status == 200 and r.gateway == g) for g in (0, 1)]


async def test_redis_paused_and_resumed_under_load(
    pair: tuple[list[Gateway], str], own_redis: RedisServer, standin: StandIn
) -> None:
    gws, key = pair
    urls = [g.url for g in gws]
    before = await fire(urls[:1], 30, key, lambda i: embedding("outage"), in_flight=10)
    assert [r.status for r in before] == [200] * 30

    own_redis.pause()
    try:
        during = await fire(urls, 2 * LIMIT, key, lambda i: embedding(f"outage {i}"), in_flight=20, client_timeout=10)
    finally:
        own_redis.resume()
    assert max(r.took for r in during) < 2.0  # nobody waits on the stopped Redis
    # Divided by the processes, not multiplied. Gateway 0 may also admit from the block of the team's limits
    # it reserved in Redis before the pause; those are counted in Redis already. A block is a 1/(2 x 2
    # processes) share of what was left after the script call that granted it, and up to 10 requests were in
    # flight then (admitted by Redis in calls sent before the block came back, not from it): at most a
    # quarter of the 20 left after 20 admitted, 5 (a loaded run kept 3 of a block granted at 28).
    ok0, ok1 = ok_by_gateway(during)
    from_block = ok0 - LIMIT // 2
    assert ok1 == LIMIT // 2 and 0 <= from_block <= (LIMIT - 30 + 10) // 4
    assert all(r.status == 429 and int(r.headers["retry-after"]) >= 1 for r in during if r.status != 200)

    await asyncio.sleep(1.5)  # the breaker tries Redis again after limits_retry_after_s
    after = await fire(urls, LIMIT, key, lambda i: embedding(f"after {i}"), in_flight=10)
    # Shared again: the 30 admitted before the outage (and the block) still count; only 10 more fit (less the
    # block), over both processes
    # (each process alone would refuse everything: its local share of 20 is used up).
    # Never more. Fewer by what blocks hold: each process's block (a share of the 10 left: 2 at most) until
    # its bucket ends, and the one gateway 0 held over the pause (its give-back failed: never sent again, as
    # it may have run) until it leaves the window.
    assert LIMIT - 30 - from_block - 3 * 2 <= sum(ok_by_gateway(after)) <= LIMIT - 30 - from_block
    refused = [r for r in after if r.status == 429]
    assert all(int(r.headers["retry-after"]) > 30 for r in refused)  # the window opened before the outage

    # Both processes counted again: a heartbeat (every 0.5 s here) after the resume finds both members.
    async def both_counted(client: httpx.AsyncClient, g: Gateway) -> dict[str, Any]:
        limits: dict[str, Any] = (await client.get(g.url + "/readyz")).json()["limits"]
        assert limits["processes"] == 2, limits
        return limits

    async with httpx.AsyncClient() as client:
        for g in gws:
            limits = await eventually_async(partial(both_counted, client, g), within=5, interval=0.1)
            assert limits["backend"] == "redis" and limits["shared"] is True
    for g in gws:
        out = g.output()
        assert out.count("redis limits unavailable") == 1  # logged once per state change, not per request
        assert out.count("redis limits available again") == 1
        assert "Traceback" not in out
