"""Helpers of the teams and limits tests: config files with teams, and bounded concurrent load."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.teams.keys import hash_key, new_key
from tests.support.processes import TLS, Gateway, GatewayFactory, RedisServer, start_redis, stop

OPENAI = "/v1/embeddings"
DS_TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
DS_MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"


def write_config(path: Path, teams: dict[str, dict[str, Any]], **settings: Any) -> dict[str, str]:
    """Writes a config with these teams, each given one new key (hash only in the file); returns the keys."""
    keys = {name: new_key() for name in teams}
    body = {
        "cache_namespace": "t" + uuid.uuid4().hex[:10],
        **settings,
        "teams": {name: {**cfg, "keys": [hash_key(keys[name])]} for name, cfg in teams.items()},
    }
    path.write_text(yaml.safe_dump(body))
    return keys


@dataclass
class JobsGateway:
    gw: Gateway
    keys: dict[str, str]  # each team's key
    files: Path  # the jobs' storage directory
    redis: RedisServer
    config: Path


@contextlib.contextmanager
def jobs_gateway(
    gateways: GatewayFactory,
    tmp: Path,
    teams: dict[str, dict[str, Any]],
    *,
    jobs: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[JobsGateway]:
    """A gateway for the batch and task tests: a redis-server of its own, a config of these teams (each a new
    key) whose jobs store their files under `tmp`/files (`jobs` adds job settings, `settings` the rest),
    the gateway on both; each stopped when the block ends."""
    server = start_redis(tmp / "redis")
    try:
        cfg = tmp / "gateway.yaml"
        keys = write_config(cfg, teams, jobs={"storage_dir": str(tmp / "files"), **(jobs or {})}, **settings)
        g = gateways.start(redis_url=server.url, config=str(cfg), env=env)
        try:
            yield JobsGateway(g, keys, tmp / "files", server, cfg)
        finally:
            stop(g.proc)
    finally:
        stop(server.proc)


def paced_model(rpm: int) -> dict[str, dict[str, Any]]:
    """The `models` setting of a model `paced-v4` (DashScope's text-embedding-v4 at 64 dimensions) whose
    upstream quota is `rpm` calls per limits window."""
    return {
        "paced-v4": {
            "upstream": "dashscope",
            "upstream_model": "text-embedding-v4",
            "dimensions": [64],
            "default_dimension": 64,
            "rpm": rpm,
        }
    }


def embedding(text: str, model: str = "text-embedding-v4") -> dict[str, Any]:
    return {"model": model, "input": text, "dimensions": 64, "encoding_format": "base64"}


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: dict[str, Any]
    gateway: int
    took: float
    done: float  # time.monotonic() when the answer arrived


async def fire(
    urls: list[str],
    n: int,
    key: str | None,
    body: Callable[[int], dict[str, Any]],
    *,
    in_flight: int = 100,
    path: str = OPENAI,
    client_timeout: float = 30.0,
) -> list[Reply]:
    """`n` requests spread round-robin over the gateways, at most `in_flight` at once.

    Each gateway has a client of its own, whose pool holds `in_flight` connections: no pool ever closes an
    idle connection to make room. A pool shared by the gateways, full at `in_flight`, closed an idle connection
    of one gateway whenever a request for another found none of its own, and httpcore may pick a connection
    it has just handed to a waiting request (encode/httpcore#1110): that request then fails with a ReadError
    (anyio's ClosedResourceError) before its answer (3 in 40 bursts of 1,200 on a loaded machine, bench/README)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    gate = asyncio.Semaphore(in_flight)
    which = itertools.cycle(range(len(urls)))
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(timeout=client_timeout, limits=limits, verify=TLS))
            for _ in urls
        ]

        async def one(i: int, g: int) -> Reply:
            async with gate:
                t0 = time.monotonic()
                try:
                    r = await clients[g].post(urls[g] + path, json=body(i), headers=headers)
                except httpx.TransportError as exc:  # kept as status 0, so that a test can say what happened
                    done = time.monotonic()
                    return Reply(0, httpx.Headers(), {"transport_error": type(exc).__name__}, g, done - t0, done)
                done = time.monotonic()
                return Reply(r.status_code, r.headers, r.json(), g, done - t0, done)

        return await asyncio.gather(*(one(i, next(which)) for i in range(n)))


def statuses(replies: list[Reply]) -> dict[object, int]:
    """Status -> count (transport errors by name), for assertion messages."""
    out: dict[object, int] = {}
    for r in replies:
        k = r.status or r.body.get("transport_error", 0)
        out[k] = out.get(k, 0) + 1
    return out
