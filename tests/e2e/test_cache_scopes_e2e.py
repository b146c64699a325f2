"""Cache scopes end to end: a team in its own scope learns nothing of another team's texts (no hit, billed,
the upstream called), teams naming one scope share their hits, shared teams keep sharing, and coalescing of
concurrent identical misses does not cross scopes. One gateway with auth on and Redis (hot cache on)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, stop
from tests.support.teamkit import write_config

MODEL = "text-embedding-v4"


@dataclass
class Scoped:
    gw: Gateway
    keys: dict[str, str]


@pytest.fixture(scope="module")
def scoped(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scoped]:
    cfg = Path(tmp_path_factory.mktemp("scopes")) / "gateway.yaml"
    teams = {
        "alpha": {},  # cache_scope: shared (the default)
        "echo": {"cache_scope": "shared"},
        "bravo": {"cache_scope": "team"},
        "charlie": {"cache_scope": "research"},
        "delta": {"cache_scope": "research"},
    }
    keys = write_config(cfg, teams)
    gw = gateways.start(redis_url=redis_server.url, config=str(cfg))
    yield Scoped(gw, keys)
    stop(gw.proc)


def embed(s: Scoped, team: str, text: str) -> tuple[int, int]:
    """(x-cache-hits, usage.prompt_tokens) of one request through the openai SDK's raw client."""
    client = openai.OpenAI(base_url=s.gw.url + "/v1", api_key=s.keys[team], max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=[text], dimensions=64)
    body = raw.parse()
    return int(raw.headers["x-cache-hits"]), body.usage.prompt_tokens


def sent_upstream(standin: StandIn, before: int) -> int:
    """Items the stand-in was asked to embed since `before` calls."""
    return sum(c["n_items"] for c in standin.calls()[before:] if not c["failed"] and c["model"] == MODEL)


def test_own_scope_learns_nothing_of_a_shared_teams_text(scoped: Scoped, standin: StandIn) -> None:
    text = f"what alpha embedded {uuid.uuid4().hex}"
    assert embed(scoped, "alpha", text)[0] == 0
    n = len(standin.calls())
    hits, tokens = embed(scoped, "bravo", text)
    assert (hits, sent_upstream(standin, n)) == (0, 1) and tokens > 0  # a miss, billed, the upstream called
    n = len(standin.calls())
    assert embed(scoped, "echo", text) == (1, 0)  # shared teams still share
    assert embed(scoped, "bravo", text) == (1, 0)  # bravo's own scope holds its own vector
    assert sent_upstream(standin, n) == 0
    other = f"what bravo embedded {uuid.uuid4().hex}"
    assert embed(scoped, "bravo", other)[0] == 0
    n = len(standin.calls())
    assert embed(scoped, "alpha", other)[0] == 0 and sent_upstream(standin, n) == 1  # nor the other way round


def test_teams_naming_one_scope_share_hits(scoped: Scoped, standin: StandIn) -> None:
    text = f"research notes {uuid.uuid4().hex}"
    assert embed(scoped, "charlie", text)[0] == 0
    n = len(standin.calls())
    assert embed(scoped, "delta", text) == (1, 0)
    assert sent_upstream(standin, n) == 0
    for outsider in ("alpha", "bravo"):
        n = len(standin.calls())
        hits, tokens = embed(scoped, outsider, text)
        assert (hits, sent_upstream(standin, n)) == (0, 1) and tokens > 0


def test_concurrent_identical_misses_coalesce_within_a_scope_only(scoped: Scoped, standin: StandIn) -> None:
    """alpha and bravo send one new text at once while the upstream is slow: two upstream items (one per
    scope); echo, sharing alpha's scope, joins alpha's flight and pays nothing."""
    text = f"at the same time {uuid.uuid4().hex}"
    standin.control(latency_ms=600)
    try:
        n = len(standin.calls())

        async def all_three() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": MODEL, "input": [text], "dimensions": 64}
                return await asyncio.gather(
                    *(
                        client.post(
                            scoped.gw.url + "/v1/embeddings",
                            json=body,
                            headers={"Authorization": f"Bearer {scoped.keys[t]}"},
                        )
                        for t in ("alpha", "bravo", "echo")
                    )
                )

        replies = asyncio.run(all_three())
    finally:
        standin.control(latency_ms=0)
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert sent_upstream(standin, n) == 2
    billed = [r.json()["usage"]["prompt_tokens"] for r in replies]
    assert billed[1] > 0 and sorted([billed[0], billed[2]])[0] == 0  # bravo paid its own; alpha or echo did not
