"""A gateway process killed (SIGKILL) in the middle of traffic: the ledger never holds more than what was
answered (plus the requests in flight at the kill, which the process may have finished), and loses at most
what docs/usage.md says: the requests answered since its last batch landed (about `usage_flush_s`)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx
import yaml

from app.limits.shared import open_client
from app.usage.report import Query, Reader
from app.usage.rows import Keys
from app.usage.store import RedisLedger
from tests.support.processes import GatewayFactory, RedisServer
from tests.support.teamkit import write_config

IN_FLIGHT = 4
FLUSH_S = 1.0  # the default usage.flush_s
SLACK_S = 2.0  # a batch's way to Redis on a loaded shared machine


async def traffic(url: str, key: str, stop_at: list[float], first: asyncio.Event) -> list[tuple[float, int, int]]:
    """(time answered, status, billed tokens) of every request, IN_FLIGHT at once, until the process dies;
    `first` is set by the first answer."""
    common = f"common {uuid.uuid4().hex}"
    out: list[tuple[float, int, int]] = []
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:

        async def worker() -> None:
            while not stop_at or time.monotonic() < stop_at[0] + 1:
                body = {"model": "text-embedding-v4", "input": [common, f"new {uuid.uuid4().hex}"], "dimensions": 64}
                try:
                    r = await client.post(url + "/v1/embeddings", json=body)
                except httpx.TransportError:
                    out.append((time.monotonic(), 0, 0))
                    if stop_at:
                        return
                    continue
                tokens = r.json()["usage"]["prompt_tokens"] if r.status_code == 200 else 0
                out.append((time.monotonic(), r.status_code, tokens))
                first.set()

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return out


def test_a_killed_process_never_overcounts_and_loses_at_most_its_last_batch(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "gateway.yaml"
    keys = write_config(cfg, {"echo": {}})
    ns = yaml.safe_load(cfg.read_text())["cache_namespace"]
    gw = gateways.start(redis_url=redis_server.url, config=str(cfg))
    stop_at: list[float] = []

    async def run() -> list[tuple[float, int, int]]:
        first = asyncio.Event()
        task = asyncio.create_task(traffic(gw.url, keys["echo"], stop_at, first))
        await first.wait()
        await asyncio.sleep(FLUSH_S + SLACK_S + 3)  # traffic for a while (several batches land), then the kill
        stop_at.append(time.monotonic())
        gw.proc.send_signal(signal.SIGKILL)
        return await task

    replies = asyncio.run(run())
    gw.proc.wait(10)
    killed = stop_at[0]
    ok = [(t, tokens) for t, status, tokens in replies if status == 200]
    assert len(ok) > 20 and all(status in (0, 200) for _, status, _ in replies)
    ledger = asyncio.run(read(redis_server.url, ns))
    requests, tokens = ledger.get("requests", 0), ledger.get("tokens", 0)
    # Never more than the truth: what was answered, plus what was in flight when the process died.
    most_tokens = max(t for _, t in ok)
    assert requests <= len(ok) + IN_FLIGHT
    assert tokens <= sum(t for _, t in ok) + IN_FLIGHT * most_tokens
    # Loses at most the last batch: every request answered before it was due has landed.
    landed_by = killed - FLUSH_S - SLACK_S
    early = [t for when, t in ok if when < landed_by]
    print(f"answered {len(ok)}, in the ledger {requests}, answered by kill - {FLUSH_S + SLACK_S:g} s {len(early)}")
    assert early and requests >= len(early), (requests, len(early), len(ok))
    assert tokens >= sum(early)


async def read(url: str, ns: str) -> dict[str, int]:
    link = open_client(url, 2.0)
    try:
        now = int(time.time())
        q = Query(now - 3600, now + 60, "1h", 3, frozenset(), frozenset({"echo"}), None, None)
        buckets, _ = await Reader(RedisLedger(link), Keys(ns, 400)).buckets(q, (now - 3600) // 3600 * 3600, [])
    finally:
        await link.close()
    out: dict[str, int] = {}
    for _, totals in buckets:
        for row in totals.values():
            for metric, n in row.items():
                out[metric] = out.get(metric, 0) + n
    return out
