"""A burst while Redis is healthy: every decision is Redis's, so a team never gets more than its limit.

Two gateway processes (one with two workers) on one redis-server, default timeouts, no REPLICAS: 300
concurrent requests of a team with `rpm: 30` admit never more than 30, and every other one is a 429 with
Retry-After. Fewer only by what a block of the team's limits held unused (docs/limits.md, "Blocks"): a block
granted to a process whose other requests were already on their way to Redis is given back at its bucket's
end, after the burst; a block is at most 30 / (2 x 3 processes) = 5 (a loaded CI run admitted 28).
Three times, each on a fresh team. (Before: a busy event loop made Redis replies "late", the
local fallback decided on top of Redis, and 75 of 120 were admitted.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import GatewayFactory, RedisServer, stop
from tests.support.teamkit import embedding, fire, statuses, write_config

ROUNDS = 3


@dataclass
class Pair:
    urls: list[str]
    keys: dict[str, str]
    logs: list[Path]


@pytest.fixture(scope="module")
def pair(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    cfg = Path(tmp_path_factory.mktemp("burst")) / "gateway.yaml"
    keys = write_config(cfg, {f"burst{i}": {"rpm": 30} for i in range(ROUNDS)})
    started = [gateways.start(redis_url=redis_server.url, config=str(cfg), workers=w) for w in (2, 1)]
    yield Pair([g.url for g in started], keys, [g.log for g in started])
    for g in started:
        stop(g.proc)


@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_300_concurrent_against_rpm_30_admit_exactly_30(pair: Pair, round_: int) -> None:
    key = pair.keys[f"burst{round_}"]
    replies = await fire(pair.urls, 300, key, lambda i: embedding(f"burst {round_} {i % 7}"), in_flight=300)
    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    assert 30 - 30 // (2 * 3) <= len(ok) <= 30, statuses(replies)
    assert len(refused) == 300 - len(ok), statuses(replies)
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) > 0
        assert r.body["error"]["type"] == "rate_limit_error"
    for log in pair.logs:  # no decision left Redis: no fallback was ever used
        assert "redis limits unavailable" not in log.read_text(errors="replace")
