"""The reproducible benchmark: one command.

    python -m bench.run [--quick] [--upstream-latency-ms 0] [--connections 32] [--duration 3]
                        [--write-readme] [--json bench/results/latest.json]

It starts, on free loopback ports: a redis-server, the stand-in upstream (bench/standin.py), the minimal
ASGI baseline (bench/baseline.py) and the gateway (`embedding-gateway serve`, 1 worker, then 2 workers),
and drives every scenario from a separate load-generator process (bench/loadgen.py) over keep-alive
HTTP/1.1 connections. Each figure is shown next to a baseline measured in the same run, as a ratio:
cache hits against the minimal ASGI app answering a body of the same size; upstream work against the
stand-in upstream called directly with the same work. The machine is shared and noisy: compare ratios.

`--quick` (CI smoke, a few seconds): one worker, short runs, a subset of scenarios.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"
MODEL, IMAGE_MODEL = "text-embedding-v4", "tongyi-embedding-vision-plus"
TEXT_ROUTE = "/api/v1/services/embeddings/text-embedding/text-embedding"
MM_ROUTE = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
README_START, README_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_data_uri(approx_bytes: int) -> str:
    """A real PNG of random pixels (incompressible) of about `approx_bytes`, as a data URI."""
    side = max(8, int((approx_bytes / 3) ** 0.5))
    raw = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    head = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    url: str
    proc: subprocess.Popen[bytes]


def wait_ready(p: Proc, path: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited with {p.proc.returncode}")
        try:
            if httpx.get(p.url + path, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{p.name} did not start within {timeout}s")


def stop(p: Proc) -> None:
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGTERM)
        try:
            p.proc.wait(15)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DASHSCOPE_", "OPENAI_", "EMBEDDING_"))}
    out.update({"PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    out.update(extra)
    return out


class Stack:
    """The processes of one run; every one is stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(self, name: str, args: list[str], port: int, extra: dict[str, str] | None = None) -> Proc:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env(**(extra or {})), stdout=log, stderr=subprocess.STDOUT)
        p = Proc(name, f"http://127.0.0.1:{port}", proc)
        self.procs.append(p)
        return p

    def redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.spawn("redis", [*args, "--dir", str(self.workdir)], port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def gateway(self, name: str, standin: Proc, redis_url: str, workers: int) -> Proc:
        port = free_port()
        extra = {
            "GATEWAY_AUTH": "off",
            "DASHSCOPE_API_KEY": KEY,
            "DASHSCOPE_BASE_URL": standin.url + "/api/v1",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": standin.url + "/v1",
            "REDIS_URL": redis_url,
        }
        args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
        return self.spawn(name, args, port, extra)

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p)


@contextmanager
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        s = Stack(Path(tmp))
        try:
            yield s
        finally:
            s.close()


# ---------------------------------------------------------------- load


def load(
    url: str,
    path: str,
    bodies: list[str],
    connections: int,
    duration: float,
    unique: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One load-generator run in its own process; returns its JSON result."""
    host, port = url.removeprefix("http://").split(":")
    job = {
        "host": host,
        "port": int(port),
        "path": path,
        "bodies": bodies,
        "connections": connections,
        "duration_s": duration,
        "warmup_s": min(0.5, duration / 3),
        "unique": unique,
        "headers": headers or {},
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(job).encode(),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=duration + 60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    good = result["statuses"].get("200", 0)
    if result["requests"] and good < result["requests"]:
        raise RuntimeError(f"non-200 answers from {url}{path}: {result['statuses']} errors={result['errors']}")
    return result


def openai_body(inputs: list[Any], encoding: str = "float", model: str = MODEL) -> str:
    return json.dumps({"model": model, "input": inputs, "encoding_format": encoding})


def native_text_body(texts: list[str]) -> str:
    return json.dumps({"model": MODEL, "input": {"texts": texts}, "parameters": {}})


def native_mm_body(contents: list[Any]) -> str:
    return json.dumps({"model": IMAGE_MODEL, "input": {"contents": contents}, "parameters": {}})


def response_size(url: str, body: str, path: str = "/v1/embeddings") -> int:
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    return len(r.content)


@dataclass
class Scenario:
    name: str
    path: str
    bodies: list[str]
    unique: bool
    baseline: str  # "asgi" or "upstream"
    upstream_path: str
    upstream_bodies: list[str]
    warm: list[str]  # bodies sent once before measuring (to fill the cache)


def scenarios(run: str, quick: bool) -> list[Scenario]:
    hit_texts = [f"cached text {i} of the benchmark {run}" for i in range(8)]
    half_cached = [f"half-hit cached {i} {run}" for i in range(4)]
    half = [*half_cached, *[f"half-hit new {i} @@N@@" for i in range(4)]]
    new2 = [f"miss a @@N@@ {run}", f"miss b @@N@@ {run}"]
    out = [
        Scenario(
            "cache hit, 8 texts, float",
            "/v1/embeddings",
            [openai_body(hit_texts)],
            False,
            "asgi",
            "",
            [],
            [openai_body(hit_texts)],
        ),
        Scenario(
            "cache hit, 8 texts, base64",
            "/v1/embeddings",
            [openai_body(hit_texts, "base64")],
            False,
            "asgi",
            "",
            [],
            [openai_body(hit_texts)],
        ),
        Scenario(
            "miss, 2 new texts",
            "/v1/embeddings",
            [openai_body(new2, "base64")],
            True,
            "upstream",
            TEXT_ROUTE,
            [native_text_body(new2)],
            [],
        ),
    ]
    if quick:
        return out
    images = [png_data_uri(150_000) for _ in range(8)]  # ~200 KB as base64
    out += [
        Scenario(
            "half hit, 4 of 8 cached",
            "/v1/embeddings",
            [openai_body(half, "base64")],
            True,
            "upstream",
            TEXT_ROUTE,
            [native_text_body(half)],
            [openai_body(half_cached)],
        ),
        Scenario(
            "cache hit, 1 image of 200 KB",
            "/v1/embeddings",
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
            False,
            "asgi",
            "",
            [],
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
        ),
        Scenario(
            "1 image of 200 KB, cached, vs upstream direct",
            "/v1/embeddings",
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
            False,
            "upstream",
            MM_ROUTE,
            [native_mm_body([{"image": im}]) for im in images],
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
        ),
    ]
    return out


# ---------------------------------------------------------------- measuring


def measure(sc: Scenario, gw: Proc, baseline: Proc, standin: Proc, conns: int, duration: float) -> dict[str, Any]:
    for body in sc.warm:
        response_size(gw.url, body)
    one = load(gw.url, sc.path, sc.bodies, 1, duration, sc.unique)
    many = load(gw.url, sc.path, sc.bodies, conns, duration, sc.unique)
    if sc.baseline == "asgi":
        size = response_size(gw.url, sc.bodies[0])
        base_path, base_url, base_bodies, base_unique = f"/?size={size}", baseline.url, sc.bodies, False
        headers = None
    else:
        base_path, base_url, base_bodies, base_unique = sc.upstream_path, standin.url, sc.upstream_bodies, sc.unique
        headers = {"Authorization": f"Bearer {KEY}"}
    b_one = load(base_url, base_path, base_bodies, 1, duration, base_unique, headers)
    b_many = load(base_url, base_path, base_bodies, conns, duration, base_unique, headers)
    return {
        "scenario": sc.name,
        "baseline": sc.baseline,
        "one": one,
        "many": many,
        "base_one": b_one,
        "base_many": b_many,
    }


def upstream_items(standin: Proc) -> int:
    return int(httpx.get(standin.url + "/_stats", timeout=10).json()["items_total"])


def reset(standin: Proc) -> None:
    httpx.post(standin.url + "/_reset", timeout=10).raise_for_status()


def calls_per_item(gw: Proc, standin: Proc, run: str, clients: int) -> dict[str, Any]:
    """`clients` concurrent identical single-item requests; then 8 clients sending the same 200 distinct
    items in different orders. Upstream items per distinct item, as the stand-in counted them."""
    import asyncio

    async def identical() -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as c:
            body = openai_body([f"identical {run}"])
            rs = await asyncio.gather(*(c.post(gw.url + "/v1/embeddings", content=body) for _ in range(clients)))
            assert all(r.status_code == 200 for r in rs)

    async def reindex() -> None:
        texts = [f"reindex {i} {run}" for i in range(200)]
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:

            async def worker(w: int) -> None:
                order = texts[w * 25 :] + texts[: w * 25]
                for i in range(0, 200, 8):
                    r = await c.post(gw.url + "/v1/embeddings", content=openai_body(order[i : i + 8]))
                    assert r.status_code == 200

            await asyncio.gather(*(worker(w) for w in range(8)))

    reset(standin)
    asyncio.run(identical())
    first = upstream_items(standin)
    reset(standin)
    asyncio.run(reindex())
    return {
        "identical_clients": clients,
        "identical_items": first,
        "reindex_items": upstream_items(standin),
        "reindex_distinct": 200,
    }


# ---------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(results: list[dict[str, Any]], conns: int) -> str:
    lines = [
        f"| workers | scenario | 1 conn p50 / p99 (ms) | baseline 1 conn p50 | overhead p50 (ms) | {conns} conns req/s "
        f"| baseline req/s | ratio | {conns} conns p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "scenario" not in r:
            continue
        base = "ASGI" if r["baseline"] == "asgi" else "upstream"
        one, many, b1, bm = r["one"], r["many"], r["base_one"], r["base_many"]
        lines.append(
            f"| {r['workers']} | {r['scenario']} | {one['p50_ms']:.3f} / {one['p99_ms']:.3f} "
            f"| {b1['p50_ms']:.3f} ({base}) | {one['p50_ms'] - b1['p50_ms']:.3f} | {many['requests_per_s']:,.0f} "
            f"| {bm['requests_per_s']:,.0f} ({base}) | {ratio(many['requests_per_s'], bm['requests_per_s'])} "
            f"| {many['p50_ms']:.2f} / {many['p99_ms']:.2f} |"
        )
    for r in results:
        if "identical_items" in r:
            lines.append("")
            lines.append(
                f"Upstream items per distinct item ({r['workers']} worker(s)): {r['identical_clients']} concurrent "
                f"identical single-item requests -> {r['identical_items']} upstream item(s); 8 clients re-indexing "
                f"the same {r['reindex_distinct']} items -> {r['reindex_items']} upstream items "
                f"({r['reindex_items'] / r['reindex_distinct']:.2f} per distinct item)."
            )
    return "\n".join(lines)


def write_readme(md: str, command: str) -> None:
    path = ROOT / "bench" / "README.md"
    text = path.read_text()
    start, end = text.index(README_START), text.index(README_END)
    stamp = f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)\n\n"
    path.write_text(text[: start + len(README_START)] + "\n" + stamp + md + "\n" + text[end:])


def readme_flags(argv: list[str]) -> list[str]:
    """The flags that shaped the figures (not where they were written: no local paths in the README)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif arg != "--write-readme" and not arg.startswith("--json="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: one worker, short runs, fewer scenarios")
    ap.add_argument("--upstream-latency-ms", type=float, default=0.0, help="the stand-in's added latency")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--workers", default="1,2", help="gateway worker counts to measure")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    ap.add_argument("--write-readme", action="store_true", help="put the table into bench/README.md")
    a = ap.parse_args(argv)
    duration = 0.4 if a.quick else a.duration
    workers = [1] if a.quick else [int(w) for w in a.workers.split(",")]
    run = uuid.uuid4().hex[:8]
    results: list[dict[str, Any]] = []
    with stack() as s:
        redis_url = s.redis()
        standin = s.spawn(
            "standin",
            [
                sys.executable,
                "-m",
                "bench.standin",
                "--port",
                str(port := free_port()),
                "--api-key",
                KEY,
                "--latency-ms",
                str(a.upstream_latency_ms),
            ],
            port,
        )
        baseline = s.spawn(
            "baseline", [sys.executable, "-m", "bench.baseline", "--port", str(port := free_port())], port
        )
        wait_ready(standin, "/_stats")
        wait_ready(baseline, "/")
        for n in workers:
            gw = s.gateway(f"gateway-{n}w", standin, redis_url, n)
            wait_ready(gw, "/healthz")
            time.sleep(0.5 if n > 1 else 0)  # let every worker come up
            for sc in scenarios(f"{run}-{n}", a.quick):
                print(f"[{n} worker(s)] {sc.name} ...", file=sys.stderr, flush=True)
                results.append({"workers": n, **measure(sc, gw, baseline, standin, a.connections, duration)})
            results.append({"workers": n, **calls_per_item(gw, standin, f"{run}-{n}", 100)})
            stop(gw)
    md = table(results, a.connections)
    print(md)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1))
    if a.write_readme:
        flags = " ".join(readme_flags(argv if argv is not None else sys.argv[1:]))
        write_readme(md, f"python -m bench.run {flags}".strip())


if __name__ == "__main__":
    main()
