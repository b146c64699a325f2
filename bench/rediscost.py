"""Redis CPU per request: what one cache hit, one miss and one limited request cost the Redis server.

    python -m bench.rediscost [--requests 400] [--connections 16] [--repeat 3] [--seconds 2] [--cluster]
                              [--json FILE]

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
import contextlib
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
# Commands the gateway sends itself (the rest run inside its scripts, whose time includes theirs).
TOP_LEVEL = ("evalsha", "eval", "mget", "ping", "set", "get")
# Before issue 13 (one Redis, same machine): hit ~30 us, miss ~320 us, limited ~70 us on top of the hit.
BEFORE_US = {"hit": 30.0, "miss": 320.0, "limited hit": 100.0, "refused": None}


class Servers:
    """The Redis servers whose work is counted: one, or every master of a cluster."""

    def __init__(self, clients: list[redis.Redis]) -> None:
        self.clients = clients

    def reset(self) -> None:
        for c in self.clients:
            c.config_resetstat()

    def cpu_us(self) -> list[float]:
        """Each server's CPU time so far (user + system: what caps its core, network handling included)."""
        out = []
        for c in self.clients:
            info = c.info("cpu")
            out.append((float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6)
        return out

    def reads(self) -> int:
        """Socket reads that brought commands: about one per round trip (a pipeline's commands in one)."""
        return sum(int(c.info("stats")["total_reads_processed"]) for c in self.clients)

    def commandstats(self) -> dict[str, tuple[int, int]]:
        """command -> (calls, usec) since the last reset, summed over the servers."""
        out: dict[str, tuple[int, int]] = {}
        for c in self.clients:
            for name, v in c.info("commandstats").items():
                k = name.removeprefix("cmdstat_")
                calls, usec = out.get(k, (0, 0))
                out[k] = (calls + int(v["calls"]), usec + int(v["usec"]))
        return {k: v for k, v in out.items() if k not in ("info", "config|resetstat")}

    def close(self) -> None:
        for c in self.clients:
            c.close()


def measured(servers: Servers, cpu0: list[float], reads0: int, n: int) -> dict[str, Any]:
    """Per request since (cpu0, reads0): CPU of all servers and of the busiest, round trips, commands."""
    cpu = [after - before for after, before in zip(servers.cpu_us(), cpu0, strict=True)]
    reads = servers.reads() - reads0
    stats = servers.commandstats()
    top = sum(u for k, (_, u) in stats.items() if k in TOP_LEVEL)
    return {
        "requests": n,
        "cpu_us_per_request": sum(cpu) / n,
        "busiest_us_per_request": max(cpu) / n,
        "round_trips_per_request": reads / n,
        "commands_us_per_request": top / n,
        "commands": {k: {"calls_per_request": c / n, "usec_per_request": u / n} for k, (c, u) in stats.items()},
    }


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


def scenario(servers: Servers, url: str, key: str, bodies: list[dict[str, Any]], conns: int, want: int) -> dict:
    servers.reset()
    cpu0, reads0, started = servers.cpu_us(), servers.reads(), time.monotonic()
    asyncio.run(send(url, key, bodies, conns, want))
    time.sleep(0.3)  # the writes and lease releases after the last answers
    seconds = time.monotonic() - started  # the usage ledger's batches: one script per second, whatever the requests
    return {**measured(servers, cpu0, reads0, len(bodies)), "seconds": seconds}


def full_load(
    servers: Servers, url: str, key: str, bodies: list[str], conns: int, want: int, seconds: float
) -> dict[str, Any]:
    """The scenario's bodies (cycled; `@@N@@` made unique) from the load generator's process for `seconds`,
    every request counted; Redis's CPU and commands divided by the requests."""
    unique = any("@@N@@" in b for b in bodies)
    servers.reset()
    cpu0, reads0 = servers.cpu_us(), servers.reads()
    r = load(url, "/v1/embeddings", bodies, conns, seconds, unique, {"Authorization": f"Bearer {key}"}, 0.0, want)
    time.sleep(0.3)  # the writes after the last answers
    return {**measured(servers, cpu0, reads0, r["requests"]), "requests_per_s": r["requests_per_s"]}


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


def measure(requests: int, conns: int, repeat: int = 3, seconds: float = 2.0, cluster: bool = False) -> dict[str, Any]:
    keys = {name: new_key() for name in ("free", "limited", "tiny")}
    teams = {"free": {}, "limited": {"rpm": 10**6, "tpm": 10**9}, "tiny": {"rpm": 1}}
    run = uuid.uuid4().hex[:8]
    with stack() as s, tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "cache_namespace": "rc" + run,
                    "teams": {n: {**t, "keys": [hash_key(keys[n])]} for n, t in teams.items()},
                }
            )
        )
        if cluster:  # 3 masters, no replicas: the gateway finds the others from one node, as in production
            from tests.support.redisfarm import start_cluster

            farm = start_cluster(Path(tmp) / "cluster", masters=3, replicas=0)
            cleanup.callback(farm.close)
            redis_url = farm.url
            servers = Servers([n.client() for n in farm.nodes])
        else:
            redis_url = s.redis()
            servers = Servers([redis.Redis.from_url(redis_url)])
        standin = s.standin()
        gw = gateway(s, standin, redis_url, config)
        wait_ready(gw, "/healthz")
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
                runs[-1][name] = scenario(servers, gw.url, key, misses if name == "miss" else hits, conns, want)
        for _ in range(repeat):
            fulls.append({})
            for name, (key, want) in teams.items():
                if key == keys["tiny"]:
                    asyncio.run(send(gw.url, key, [body(["tiny"])], 1, None))
                fulls[-1][name] = full_load(servers, gw.url, key, full[name], conns, want, seconds)
        out = {name: min((r[name] for r in runs), key=lambda x: x["cpu_us_per_request"]) for name in runs[0]}
        for name in out:
            out[name]["full_load"] = min((f[name] for f in fulls), key=lambda x: x["cpu_us_per_request"])
        servers.close()
        return out


def table(results: dict[str, Any]) -> str:
    lines = [
        f"| request ({ITEMS} items) | Redis CPU (us) | in commands (us) | round trips | before issue 13 (us) "
        "| commands per request | at full load: Redis CPU (us) | busiest server (us) | round trips | req/s "
        "| commands per request |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        before = BEFORE_US.get(name)
        was = f"~{before:.0f}" if before else "-"
        row = f"| {name} | {r['cpu_us_per_request']:.1f} | {r['commands_us_per_request']:.1f} "
        row += f"| {r['round_trips_per_request']:.2f} | {was} | {commands(r, True)} "
        full = r.get("full_load")
        if full:
            row += f"| {full['cpu_us_per_request']:.1f} | {full['busiest_us_per_request']:.1f} "
            row += f"| {full['round_trips_per_request']:.2f} | {full['requests_per_s']:.0f} | {commands(full, False)} |"
        else:
            row += "| - | - | - | - | - |"
        lines.append(row)
    return "\n".join(lines)


def commands(r: dict[str, Any], usec: bool) -> str:
    return ", ".join(
        f"{k} x{v['calls_per_request']:.2f}" + (f" ({v['usec_per_request']:.1f} us)" if usec else "")
        for k, v in sorted(r["commands"].items(), key=lambda kv: -kv[1]["usec_per_request"])
        if v["calls_per_request"] >= 0.05
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rediscost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scenario; the least is reported")
    ap.add_argument("--seconds", type=float, default=2.0, help="of each full-load run")
    ap.add_argument("--cluster", action="store_true", help="a Redis Cluster of 3 masters instead of one Redis")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    results = measure(a.requests, a.connections, a.repeat, a.seconds, a.cluster)
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
