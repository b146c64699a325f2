"""Soak: a mixed workload against a real gateway process for minutes, from this (separate) process.

    python -m bench.soak --minutes 10                 # the documented run (docs/hardening.md)
    python -m bench.soak --seconds 20 --interval-s 5  # quick mode (the test suite runs one)

It starts its own redis-server, stand-in upstream (with latency) and gateway (one worker, Redis cache,
media_fetch on with a loopback image origin allowed), then sends requests at a paced rate from a fixed
number of connections and reports, per interval: requests, 4xx, 5xx, p50 and p99 latency, and the
gateway's resident memory (RSS, from /proc). The verdict: zero 5xx, zero unexpected statuses, and RSS
growth after warm-up under 10% (judged only when the run lasts past warm-up by two intervals).
Everything listens on 127.0.0.1 and everything stops when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.imageserver import ImageServer, png_bytes
from bench.procs import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-soak-upstream-key"
MM_ROUTE = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT_ROUTE = "/api/v1/services/embeddings/text-embedding/text-embedding"


# ---------------------------------------------------------------- processes


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.upper().endswith(("_PROXY", "API_KEY", "BASE_URL"))}
    out.pop("REDIS_URL", None)
    out.pop("EMBEDDING_GATEWAY_CONFIG", None)
    return {**out, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Stack:
    gateway: str
    gateway_pid: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def start_stack(workdir: Path, origin: ImageServer, latency_ms: int, logdir: Path | None = None) -> Stack:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server is not installed (scripts/test.sh installs it)")
    procs: list[subprocess.Popen[bytes]] = []
    rport, sport, gport = free_port(), free_port(), free_port()
    procs.append(
        subprocess.Popen(
            [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )
    )
    out = (workdir / "standin.log").open("ab")
    standin = [sys.executable, "-m", "bench.standin", "--port", str(sport), "--api-key", KEY]
    procs.append(
        subprocess.Popen([*standin, "--latency-ms", str(latency_ms)], cwd=ROOT, env=env(), stdout=out, stderr=out)
    )
    wait_http(f"http://127.0.0.1:{sport}/_stats", procs[-1], timeout=60)
    gw_env = env(
        REDIS_URL=f"redis://127.0.0.1:{rport}/0",
        DASHSCOPE_API_KEY=KEY,
        DASHSCOPE_BASE_URL=f"http://127.0.0.1:{sport}/api/v1",
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=f"http://127.0.0.1:{sport}/v1",
        GATEWAY_AUTH="off",
        LOCAL_MODEL="false",
        MEDIA_FETCH="true",
        MEDIA_FETCH_ALLOW_HOSTS=orjson.dumps([origin.netloc]).decode(),
        LOG_LEVEL="warning",
        # Small bounded caches that fill during the warm-up: growth after it would then be a leak, not a
        # cache filling up to its configured size (64 MiB hot vectors + 48 MiB vector text by default).
        CACHE_HOT_MAX_BYTES=str(4 * 1024 * 1024),
        CACHE_TEXT_MAX_BYTES=str(4 * 1024 * 1024),
    )
    log = ((logdir or workdir) / "gateway-soak.log").open("ab")
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(gport), "--workers", "1"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=gw_env, stdout=log, stderr=log))
    url = f"http://127.0.0.1:{gport}"
    wait_http(url + "/healthz", procs[-1], timeout=60)
    return Stack(url, procs[-1].pid, procs)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- workload

Call = tuple[str, str, Any, bool]  # method, path, json body (or raw bytes), expected to succeed


class Workload:
    """A mixed workload: cache hits and misses on three routes, float and base64, inline images, image
    URLs fetched by the gateway, model listing and readiness, and bad requests that must get a 4xx."""

    def __init__(self, origin: ImageServer, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.texts = [f"soak pool text {i}: " + "lorem ipsum " * (i % 20) for i in range(300)]
        images = [png_bytes(4, 4, seed=i) for i in range(40)]
        self.data_uris = ["data:image/png;base64," + base64.b64encode(img).decode() for img in images]
        self.image_urls = [origin.add(f"/img/{i}.png", img) for i, img in enumerate(images[:20])]
        self.fresh = 0
        self.mix: list[tuple[float, Callable[[], Call]]] = [
            (0.30, self.openai_hits),
            (0.15, self.openai_misses),
            (0.15, self.dashscope_text),
            (0.15, self.multimodal_inline),
            (0.10, self.image_urls_fetched),
            (0.05, self.ops),
            (0.10, self.bad),
        ]

    def next(self) -> Call:
        x = self.rng.random()
        for weight, make in self.mix:
            if x < weight:
                return make()
            x -= weight
        return self.mix[0][1]()

    def _new_text(self) -> str:
        self.fresh += 1
        return f"fresh soak text {self.fresh} {self.rng.random()}"

    def openai_hits(self) -> Call:
        texts = self.rng.sample(self.texts, self.rng.randint(1, 16))
        fmt = self.rng.choice(["float", "base64"])
        return "POST", "/v1/embeddings", {"model": "text-embedding-v4", "input": texts, "encoding_format": fmt}, True

    def openai_misses(self) -> Call:
        texts = [self._new_text() for _ in range(self.rng.randint(1, 8))] + self.rng.sample(self.texts, 2)
        body = {"model": "text-embedding-v4", "input": texts, "dimensions": 256, "encoding_format": "float"}
        return "POST", "/v1/embeddings", body, True

    def dashscope_text(self) -> Call:
        texts = self.rng.sample(self.texts, 4) + ([self._new_text()] if self.rng.random() < 0.5 else [])
        body = {"model": "text-embedding-v4", "input": {"texts": texts}, "parameters": {"text_type": "query"}}
        return "POST", TEXT_ROUTE, body, True

    def multimodal_inline(self) -> Call:
        contents: list[Any] = [{"image": u} for u in self.rng.sample(self.data_uris, 3)]
        contents.append({"text": self.rng.choice(self.texts)})
        body = {"model": "tongyi-embedding-vision-plus", "input": {"contents": contents}, "parameters": {}}
        return "POST", MM_ROUTE, body, True

    def image_urls_fetched(self) -> Call:
        items = [{"image": u} for u in self.rng.sample(self.image_urls, 2)]
        return "POST", "/v1/embeddings", {"model": "tongyi-embedding-vision-flash", "input": items}, True

    def ops(self) -> Call:
        return "GET", self.rng.choice(["/v1/models", "/readyz", "/healthz"]), None, True

    def bad(self) -> Call:
        choice = self.rng.randrange(5)
        if choice == 0:
            return "POST", "/v1/embeddings", {"model": "no-such-model", "input": "x"}, False
        if choice == 1:
            return "POST", "/v1/embeddings", {"model": "text-embedding-v4", "input": "x", "dimensions": 3}, False
        if choice == 2:
            return "POST", "/v1/embeddings", b'{"model": "text-embedding-v4", "input": [', False
        if choice == 3:
            bad_image = {"image": "data:image/png;base64," + base64.b64encode(b"GIF89a lies").decode()}
            return (
                "POST",
                MM_ROUTE,
                {"model": "tongyi-embedding-vision-plus", "input": {"contents": [bad_image]}},
                False,
            )
        return (
            "POST",
            "/v1/embeddings",
            {"model": "tongyi-embedding-vision-plus", "input": [{"image": "http://10.0.0.1/x.png"}]},
            False,
        )


# ---------------------------------------------------------------- measuring


@dataclass
class Interval:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    unexpected: int = 0
    errors: int = 0  # transport errors (no response)
    rss: int = 0
    load: float = 0.0  # the machine's 1-minute load average at the interval's end (other work shows here)

    def row(self, index: int, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else 0.0

        return {
            "interval": index,
            "requests": len(lat),
            "rps": round(len(lat) / seconds, 1),
            "4xx": sum(n for s, n in self.statuses.items() if 400 <= s < 500),
            "5xx": sum(n for s, n in self.statuses.items() if s >= 500),
            "unexpected": self.unexpected,
            "transport_errors": self.errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "rss_mib": round(self.rss / 2**20, 1),
            "load1": round(self.load, 2),
        }


async def drive(stack: Stack, work: Workload, args: argparse.Namespace) -> list[dict[str, Any]]:
    duration = args.seconds if args.seconds else args.minutes * 60
    n_intervals = max(1, round(duration / args.interval_s))
    intervals = [Interval() for _ in range(n_intervals)]
    start = time.monotonic()
    end = start + n_intervals * args.interval_s
    gap = args.concurrency / args.rate  # each connection's pace

    async def one(client: httpx.AsyncClient, call: Call) -> None:
        method, path, body, good = call
        content = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else None)
        t0 = time.monotonic()
        slot = intervals[min(n_intervals - 1, int((t0 - start) / args.interval_s))]
        try:
            r = await client.request(method, path, content=content, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            slot.errors += 1
            return
        slot.latencies.append(time.monotonic() - t0)
        slot.statuses[r.status_code] = slot.statuses.get(r.status_code, 0) + 1
        if (r.status_code == 200) != good or r.status_code >= 500:
            slot.unexpected += 1

    async def worker(i: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=30, limits=limits, trust_env=False) as client:
            next_at = start + gap * i / args.concurrency
            while (now := time.monotonic()) < end:
                await asyncio.sleep(max(0.0, next_at - now))
                next_at += gap
                await one(client, work.next())

    async def sample_rss() -> None:
        while (now := time.monotonic()) < end:
            index = min(n_intervals - 1, int((now - start) / args.interval_s))
            intervals[index].rss = max(intervals[index].rss, rss_bytes(stack.gateway_pid))
            intervals[index].load = os.getloadavg()[0]
            await asyncio.sleep(min(1.0, args.interval_s / 5))

    async def report() -> None:
        for index in range(n_intervals):
            await asyncio.sleep(max(0.0, start + (index + 1) * args.interval_s - time.monotonic()) + 0.5)
            print(orjson.dumps(intervals[index].row(index + 1, args.interval_s)).decode(), flush=True)

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)), sample_rss(), report())
    return [iv.row(i + 1, args.interval_s) for i, iv in enumerate(intervals)]


def verdict(rows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    total = sum(r["requests"] for r in rows)
    bad = sum(r["5xx"] + r["unexpected"] + r["transport_errors"] for r in rows)
    out: dict[str, Any] = {
        "requests": total,
        "5xx": sum(r["5xx"] for r in rows),
        "unexpected": sum(r["unexpected"] for r in rows),
        "transport_errors": sum(r["transport_errors"] for r in rows),
        "ok": bad == 0,
    }
    steady = rows[warmup:]
    if len(steady) >= 2:
        base, peak = steady[0]["rss_mib"], max(r["rss_mib"] for r in steady)
        growth = (peak - base) / base if base else 0.0
        out.update(rss_after_warmup_mib=base, rss_peak_mib=peak, rss_growth_pct=round(100 * growth, 1))
        out["ok"] = out["ok"] and growth < 0.10
        p99 = [r["p99_ms"] for r in steady]
        out.update(p99_min_ms=min(p99), p99_max_ms=max(p99))
    return out


def markdown(rows: list[dict[str, Any]], interval_s: float) -> str:
    head = f"| {interval_s:g}s interval | requests | req/s | 4xx | 5xx | p50 ms | p99 ms | RSS MiB | load (1 min) |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['interval']} | {r['requests']} | {r['rps']} | {r['4xx']} | {r['5xx']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['rss_mib']} | {r['load1']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--seconds", type=float, default=0, help="overrides --minutes (quick mode)")
    p.add_argument("--interval-s", type=float, default=60, help="reporting interval")
    p.add_argument("--warmup", type=int, default=1, help="intervals of warm-up before RSS is judged")
    p.add_argument("--rate", type=float, default=100, help="requests per second (all connections together)")
    p.add_argument("--concurrency", type=int, default=16, help="connections")
    p.add_argument("--latency-ms", type=int, default=10, help="stand-in upstream latency")
    p.add_argument("--json", help="write rows and verdict to this file")
    p.add_argument("--logdir", type=Path, help="keep the gateway's output here (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, ImageServer() as origin:
        work = Workload(origin)
        stack = start_stack(Path(tmp), origin, args.latency_ms, args.logdir)
        try:
            rows = asyncio.run(drive(stack, work, args))
        finally:
            stack.stop()
    result = verdict(rows, args.warmup)
    print(markdown(rows, args.interval_s))
    print(orjson.dumps(result).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"rows": rows, "verdict": result}, option=orjson.OPT_INDENT_2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
