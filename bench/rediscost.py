"""Redis CPU per request: what one cache hit, one miss and one limited request cost the Redis server.

    python -m bench.rediscost [--requests 400] [--connections 16] [--repeat 3] [--seconds 2] [--json FILE]

Starts its own redis-server, the stand-in upstream and one gateway (1 worker, a team config with keys),
resets Redis's statistics (CONFIG RESETSTAT) before each scenario, sends the scenario's requests at
`--connections` at once, then reads the server's CPU time (`INFO cpu`, user + system: what caps one Redis
core, network handling included) and `INFO commandstats` (time inside commands: a script's line includes
the commands it calls, which are listed again under their own names; the "commands" figure counts only
the top-level ones: scripts, MGET, and the pipelined SETs of a miss), each divided by the requests. The hot
cache is off so that every hit reaches Redis. Scenarios (8 text items per request):
- hit: every item cached, no team limits;
- miss: every item new (cache read, lease claim, vector writes, lease release), no team limits;
- limited hit: every item cached, the team has rpm and tpm (the team's admission only: nothing to settle);
- refused: the team is over its rpm (429).
Each scenario is measured twice: "paced", `--requests` sent by an httpx client in this process (it sends a
few hundred a second: the gateway mostly idles, each request reaches Redis alone); and "full load", the
gateway kept busy for `--seconds` by bench/loadgen.py's process over the same `--connections` (every
request counted, none of a warm-up), as a fleet at its capacity is: that is the cost that sizes Redis
(docs/operations.md), since the gateway sends the Redis work of one event-loop turn's requests together.
Also used by `python -m bench.run` for its report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from app.teams.keys import hash_key, new_key

from .scenarios import load
from .stack import KEY, Proc, Stack, free_port, stack, wait_ready

ITEMS = 8
TOP_LEVEL = ("evalsha", "eval", "mget", "ping")
# Before issue 13 (one Redis, same machine): hit ~30 us, miss ~320 us, limited ~70 us on top of the hit.
BEFORE_US = {"hit": 30.0, "miss": 320.0, "limited hit": 100.0, "refused": None}


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec) since the last CONFIG RESETSTAT."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def body(texts: list[str]) -> dict[str, Any]:
    return {"model": "text-embedding-v4", "input": texts, "dimensions": 64, "encoding_format": "base64"}


async def send(url: str, key: str, bodies: list[dict[str, Any]], conns: int, want: int | None) -> None:
    gate = asyncio.Semaphore(conns)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=conns)) as c:

        async def one(b: dict[str, Any]) -> None:
            async with gate:
                r = await c.post(url + "/v1/embeddings", json=b, headers=headers)
                assert want is None or r.status_code == want, (r.status_code, r.text[:200])

        await asyncio.gather(*(one(b) for b in bodies))


def cpu_us(client: redis.Redis) -> float:
    info = client.info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6


def scenario(client: redis.Redis, url: str, key: str, bodies: list[dict[str, Any]], conns: int, want: int) -> dict:
    client.config_resetstat()
    before, started = cpu_us(client), time.monotonic()
    asyncio.run(send(url, key, bodies, conns, want))
    time.sleep(0.3)  # the writes and lease releases after the last answers
    cpu = cpu_us(client) - before
    seconds = time.monotonic() - started  # the usage ledger's batches: one script per second, whatever the requests
    n = len(bodies)
    stats = {k: v for k, v in commandstats(client).items() if k not in ("info", "config|resetstat")}
    top = sum(u for k, (_, u) in stats.items() if k in TOP_LEVEL)
    if "set" in stats:  # a miss's SETs: the pipelined vector writes; the lease SETs (one per item) are in scripts
        calls, usec = stats["set"]
        written = max(0, calls - stats.get("get", (0, 0))[0] // 2)
        top += usec * written / calls if calls else 0
    per = {k: {"calls_per_request": c / n, "usec_per_request": u / n} for k, (c, u) in stats.items()}
    out = {"requests": n, "cpu_us_per_request": cpu / n, "commands_us_per_request": top / n, "commands": per}
    return {**out, "seconds": seconds}


def full_load(
    client: redis.Redis, url: str, key: str, bodies: list[str], conns: int, want: int, seconds: float
) -> dict[str, Any]:
    """The scenario's bodies (cycled; `@@N@@` made unique) from the load generator's process for `seconds`,
    every request counted; Redis's CPU and commands divided by the requests."""
    unique = any("@@N@@" in b for b in bodies)
    client.config_resetstat()
    before = cpu_us(client)
    r = load(url, "/v1/embeddings", bodies, conns, seconds, unique, {"Authorization": f"Bearer {key}"}, 0.0, want)
    time.sleep(0.3)  # the writes and lease releases after the last answers
    cpu = cpu_us(client) - before
    n = r["requests"]
    stats = {k: v for k, v in commandstats(client).items() if k not in ("info", "config|resetstat")}
    per = {k: {"calls_per_request": c / n, "usec_per_request": u / n} for k, (c, u) in stats.items()}
    return {"requests": n, "requests_per_s": r["requests_per_s"], "cpu_us_per_request": cpu / n, "commands": per}


def gateway(s: Stack, standin: Proc, redis_url: str, config: Path) -> Proc:
    port = free_port()
    extra = {
        "GATEWAY_AUTH": "required",
        "LOCAL_MODEL": "false",
        "CACHE_HOT_MAX_BYTES": "0",
        "LIMITS_HEARTBEAT_S": "300",  # one beat at start: requests only in the figures
        "DASHSCOPE_API_KEY": KEY,
        "DASHSCOPE_BASE_URL": standin.url + "/api/v1",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": standin.url + "/v1",
        "REDIS_URL": redis_url,
    }
    args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--config", str(config)]
    return s.spawn("gateway-rediscost", args, port, extra)


def measure(requests: int, conns: int, repeat: int = 3, seconds: float = 2.0) -> dict[str, Any]:
    keys = {name: new_key() for name in ("free", "limited", "tiny")}
    teams = {"free": {}, "limited": {"rpm": 10**6, "tpm": 10**9}, "tiny": {"rpm": 1}}
    run = uuid.uuid4().hex[:8]
    with stack() as s, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "cache_namespace": "rc" + run,
                    "teams": {n: {**t, "keys": [hash_key(keys[n])]} for n, t in teams.items()},
                }
            )
        )
        redis_url = s.redis()
        port = free_port()
        standin = s.spawn(
            "standin", [sys.executable, "-m", "bench.standin", "--port", str(port), "--api-key", KEY], port
        )
        wait_ready(standin, "/_stats")
        gw = gateway(s, standin, redis_url, config)
        wait_ready(gw, "/healthz")
        client = redis.Redis.from_url(redis_url)
        warm = [body([f"hit {run} {i} {j}" for j in range(ITEMS)]) for i in range(20)]
        asyncio.run(send(gw.url, keys["free"], warm, conns, 200))
        hits = [warm[i % len(warm)] for i in range(requests)]
        teams = {"hit": (keys["free"], 200), "miss": (keys["free"], 200), "limited hit": (keys["limited"], 200)}
        teams["refused"] = (keys["tiny"], 429)
        raw = [json.dumps(b) for b in warm]
        full = {
            "hit": raw,
            "miss": [json.dumps(body([f"full {run} @@N@@ {j}" for j in range(ITEMS)]))],
            "limited hit": raw,
            "refused": raw,
        }
        runs: list[dict[str, Any]] = []
        fulls: list[dict[str, Any]] = []
        for r in range(repeat):  # the least of `repeat` runs: a loaded machine only ever adds time
            misses = [body([f"miss {run} {r} {i} {j}" for j in range(ITEMS)]) for i in range(requests // 2)]
            runs.append({})
            for name, (key, want) in teams.items():
                if key == keys["tiny"]:  # its one request of the window (the whole run lasts more than a window)
                    asyncio.run(send(gw.url, key, [body(["tiny"])], 1, None))
                runs[-1][name] = scenario(client, gw.url, key, misses if name == "miss" else hits, conns, want)
        for _ in range(repeat):
            fulls.append({})
            for name, (key, want) in teams.items():
                if key == keys["tiny"]:
                    asyncio.run(send(gw.url, key, [body(["tiny"])], 1, None))
                fulls[-1][name] = full_load(client, gw.url, key, full[name], conns, want, seconds)
        out = {name: min((r[name] for r in runs), key=lambda x: x["cpu_us_per_request"]) for name in runs[0]}
        for name in out:
            out[name]["full_load"] = min((f[name] for f in fulls), key=lambda x: x["cpu_us_per_request"])
        client.close()
        return out


def table(results: dict[str, Any]) -> str:
    lines = [
        f"| request ({ITEMS} items) | Redis CPU (us) | in commands (us) | before issue 13 (us) "
        "| commands per request | at full load: Redis CPU (us) | req/s | commands per request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        before = BEFORE_US.get(name)
        cmds = ", ".join(
            f"{k} x{v['calls_per_request']:.2f} ({v['usec_per_request']:.1f} us)"
            for k, v in sorted(r["commands"].items(), key=lambda kv: -kv[1]["usec_per_request"])
            if v["calls_per_request"] >= 0.05
        )
        was = f"~{before:.0f}" if before else "-"
        full = r.get("full_load")
        at_full = "| - | - | - |"
        if full:
            fcmds = ", ".join(
                f"{k} x{v['calls_per_request']:.2f}"
                for k, v in sorted(full["commands"].items(), key=lambda kv: -kv[1]["usec_per_request"])
                if v["calls_per_request"] >= 0.05
            )
            at_full = f"| {full['cpu_us_per_request']:.1f} | {full['requests_per_s']:.0f} | {fcmds} |"
        lines.append(
            f"| {name} | {r['cpu_us_per_request']:.1f} | {r['commands_us_per_request']:.1f} | {was} | {cmds} {at_full}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rediscost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scenario; the least is reported")
    ap.add_argument("--seconds", type=float, default=2.0, help="of each full-load run")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    results = measure(a.requests, a.connections, a.repeat, a.seconds)
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
