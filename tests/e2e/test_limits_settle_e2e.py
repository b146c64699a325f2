"""A team's tokens count the upstream's bills exactly, across replicas, when its misses are settled in the blocks
of its limits (docs/limits.md, "Blocks", "Tokens").

Two gateway processes (one with two workers) on one redis-server, the defaults otherwise, and a team limited by
`tpm` alone: most of its misses are admitted from a block of its limits that their process holds, and finished
there (no finish script): the estimate's difference from the bill goes back to the block, or is taken from it,
and Redis counts the bill when the block's rest goes back at its bucket's end (1 s of the 60 s window), or at a
clean stop. Misses of new texts go through both gateways at once; the stand-in bills a text len // 4 tokens
(under the gateway's estimate of len // 3), or len // 2 with its `chars_per_token` control (over it). Once the
blocks are back, Redis's count of the team (its hash's totals, the layout of app/limits/buckets.lua) is the sum
of the bills the answers reported, not of the estimates, and so is what the team is admitted for: a request
whose estimate is exactly the rest of `tpm` passes, one token more is refused. A gateway stopped (SIGTERM) right
after misses, while its process holds a block, leaves Redis counting the bills alone.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.polling import eventually
from tests.support.processes import GatewayFactory, RedisServer, StandIn, stop
from tests.support.teamkit import Reply, embedding, fire, statuses, write_config

TPM = 6000
MISSES = 40  # per test, round-robin over the two gateways
CHARS = 120  # per text: estimated 40 tokens; billed 30 (len // 4), or 60 (len // 2)
TEAMS = ("under", "over", "stop")


@dataclass
class Fleet:
    urls: list[str]
    keys: dict[str, str]
    namespace: str
    redis: redis.Redis
    config: Path


@pytest.fixture(scope="module")
def fleet(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    cfg = Path(tmp_path_factory.mktemp("settle")) / "gateway.yaml"
    keys = write_config(cfg, {team: {"tpm": TPM} for team in TEAMS})
    namespace = yaml.safe_load(cfg.read_text())["cache_namespace"]
    started = [gateways.start(redis_url=redis_server.url, config=str(cfg), workers=w) for w in (2, 1)]
    client = redis.Redis.from_url(redis_server.url)
    yield Fleet([g.url for g in started], keys, namespace, client, cfg)
    client.close()
    for g in started:
        stop(g.proc)


def counted(fleet: Fleet, team: str) -> tuple[int, int]:
    """The team's requests and tokens in the window, as Redis counts them (and every process reads them)."""
    n, t = fleet.redis.hmget(f"{{{fleet.namespace}:team:{team}}}:meta", "n", "t")
    return int(n or 0), int(t or 0)


def texts(team: str, count: int, chars: int = CHARS) -> list[str]:
    """`count` texts nobody sent before (misses), of `chars` characters each."""
    run = uuid.uuid4().hex
    return [f"{team} {run} {i} ".ljust(chars, "x") for i in range(count)]


async def misses(fleet: Fleet, team: str, urls: list[str], billed_each: int) -> int:
    """MISSES new texts through `urls` at once; each answer's usage is its bill. Returns their sum."""
    sent = texts(team, MISSES)
    replies = await fire(urls, MISSES, fleet.keys[team], lambda i: embedding(sent[i]), in_flight=16)
    assert all(r.status == 200 for r in replies), statuses(replies)
    assert all(r.headers["x-cache-misses"] == "1" for r in replies)
    # The stand-in bills a call its texts' tokens, which the requests that shared it split in proportion to their
    # estimates (all alike here): each request's bill is its text's, never its estimate
    bills = [bill(r) for r in replies]
    assert bills == [billed_each] * MISSES and billed_each != CHARS // 3, bills
    return sum(bills)


def bill(r: Reply) -> int:
    usage = r.body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"]
    return int(usage["total_tokens"])


def settled(fleet: Fleet, team: str, requests: int, tokens: int) -> None:
    """Redis counts `requests` and `tokens` for the team once the blocks are back (their bucket's end, 1 s)."""

    def check() -> bool:
        got = counted(fleet, team)
        assert got == (requests, tokens), f"Redis counts {got} (requests, tokens), the answers {(requests, tokens)}"
        return True

    eventually(check, within=15, what=f"{team}'s count in Redis")


async def exactly_the_rest_is_admitted(fleet: Fleet, team: str, requests: int, tokens: int) -> None:
    """A request estimated one token over what is left of `tpm` is refused, one estimated exactly that passes."""
    rest = TPM - tokens
    [over] = await fire(fleet.urls[1:], 1, fleet.keys[team], lambda i: embedding(texts(team, 1, 3 * (rest + 1))[0]))
    assert over.status == 429 and over.body["error"]["type"] == "rate_limit_error", over.body
    assert over.headers["x-ratelimit-remaining-tokens"] == str(rest)
    [fits] = await fire(fleet.urls[:1], 1, fleet.keys[team], lambda i: embedding(texts(team, 1, 3 * rest)[0]))
    assert fits.status == 200, fits.body
    assert counted(fleet, team) == (requests + 1, tokens + bill(fits))  # finished by its script: no block held


async def test_bills_under_the_estimates_go_back_to_the_blocks(fleet: Fleet, standin: StandIn) -> None:
    before = counted(fleet, "under")
    total = await misses(fleet, "under", fleet.urls, CHARS // 4)
    settled(fleet, "under", before[0] + MISSES, before[1] + total)
    await exactly_the_rest_is_admitted(fleet, "under", before[0] + MISSES, before[1] + total)


async def test_bills_over_the_estimates_are_taken_from_the_blocks(fleet: Fleet, standin: StandIn) -> None:
    standin.control(chars_per_token=2)
    try:
        before = counted(fleet, "over")
        total = await misses(fleet, "over", fleet.urls, CHARS // 2)
        settled(fleet, "over", before[0] + MISSES, before[1] + total)
        await exactly_the_rest_is_admitted(fleet, "over", before[0] + MISSES, before[1] + total)
    finally:
        standin.reset()


async def test_a_clean_stop_gives_back_the_blocks_with_their_bills(
    fleet: Fleet, gateways: GatewayFactory, redis_server: RedisServer, standin: StandIn
) -> None:
    """A gateway stopped (SIGTERM) while its process holds a block of the team, right after misses settled in
    them: its close gives every block's rest back, and Redis counts the bills, nothing of the blocks."""
    gw = gateways.start(redis_url=redis_server.url, config=str(fleet.config))
    before = counted(fleet, "stop")
    start_of_a_bucket(fleet)  # the misses and the stop in one bucket: the blocks are still held at the stop
    total = await misses(fleet, "stop", [gw.url], CHARS // 4)
    held = counted(fleet, "stop")
    assert held[0] > before[0] + MISSES and held[1] > before[1] + total, held  # blocks' rests counted as admitted
    stop(gw.proc)
    assert gw.proc.returncode in (0, -signal.SIGTERM)  # stopped by its signal (uvicorn raises it again), not killed
    assert counted(fleet, "stop") == (before[0] + MISSES, before[1] + total)


def start_of_a_bucket(fleet: Fleet) -> None:
    """Waits for the start of a second on Redis's clock (the team's buckets are its seconds)."""
    _, micros = fleet.redis.time()
    if micros > 100_000:
        time.sleep((1_000_000 - micros) / 1e6 + 0.01)
