"""A/B of the cache-hit or miss path: this checkout's gateway against another checkout's (e.g. main before
a change), in one run, on one Redis and one stand-in, measured in alternating rounds so that the machine's
noise falls on both alike:

    python -m bench.ab --other ../main-checkout --rounds 5 --duration 3
    python -m bench.ab --other ../main-checkout --scenario miss     # 2 new texts a request, 16 connections
    python -m bench.ab --other ../main-checkout --encoding base64 --team free   # hits of the team without limits
    python -m bench.ab --other . --b-traces 0.01    # this checkout, traces off (A) and on at 1 % (B)

Each round measures A (the other checkout) and B (this one), in alternating order, with one connection
(p50 latency) and with `--connections` connections (requests per second), on the benchmark's
"cache hit, 8 texts, float" body (`--encoding base64`: the same
texts answered in base64; `--team free`: sent with the key of the team without limits, whose hits make no
admission call), or with `--scenario miss` on its "miss, 2 new texts" body (base64, every
text new, 16 connections unless told). Each gateway's CPU time per request under the many-connection load
is printed too (from /proc, warm-up included: the figure that moves least on a shared machine). Prints
every round and the medians, and B/A ratios. Both gateways run with this checkout's Python environment;
only the app code differs, and, with `--b-traces RATIO`, B's OpenTelemetry variables: traces on, sampled at
RATIO (parentbased_traceidratio; the load sends no traceparent), exported over OTLP/HTTP to a sink on
loopback (bench/otlpsink.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

from bench.inproc import trace_env
from bench.procs import free_port
from bench.scenarios import MISS_CONNECTIONS, MISS_TEXTS, load, openai_body
from bench.stack import AUTH, AUTH_FREE, Proc, Stack, env, gateway_env, stack, team_config, upstream_env, wait_ready

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def gateway(s: Stack, name: str, root: Path, standin: Proc, redis_url: str, traces: dict[str, str]) -> Proc:
    """`embedding-gateway serve` from the app code of checkout `root` (its working directory)."""
    port = free_port()
    extra = gateway_env(team_config(s.workdir), **traces, **upstream_env(standin, redis_url))
    args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    log = (s.workdir / f"{name}.log").open("ab")
    proc = subprocess.Popen(args, cwd=root, env=env(**extra), stdout=log, stderr=subprocess.STDOUT)
    p = Proc(name, f"http://127.0.0.1:{port}", proc)
    s.procs.append(p)
    wait_ready(p, "/healthz")
    return p


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", type=Path, required=True, help="the checkout measured as A")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=None, help="32 (hit), 16 (miss)")
    ap.add_argument("--scenario", choices=("hit", "miss"), default="hit")
    ap.add_argument("--encoding", choices=("float", "base64"), default="float", help="of the hit scenario's answer")
    ap.add_argument("--team", choices=("limited", "free"), default="limited", help="with limits or without")
    ap.add_argument("--b-traces", type=float, default=None, metavar="RATIO", help="B with traces on at RATIO")
    a = ap.parse_args(argv)
    miss = a.scenario == "miss"
    conns = a.connections or (MISS_CONNECTIONS if miss else 32)
    auth = AUTH_FREE if a.team == "free" else AUTH
    if miss:
        body = [openai_body([f"{t} {os.getpid()}" for t in MISS_TEXTS], "base64")]
    else:
        body = [openai_body([f"cached text {i} of the A/B run" for i in range(8)], a.encoding)]
    figures: dict[str, dict[str, list[float]]] = {n: {"p50": [], "rps": [], "cpu": []} for n in "AB"}
    with stack() as s:
        redis_url = s.redis()
        standin = s.standin()
        traces, sink = {}, None
        if a.b_traces is not None:
            port = free_port()
            sink = s.spawn("otlpsink", [sys.executable, "-m", "bench.otlpsink", "--port", str(port)], port)
            wait_ready(sink, "/_stats")
            traces = trace_env(sink.url, a.b_traces)
        gws = {
            "A": gateway(s, "A", a.other.resolve(), standin, redis_url, {}),
            "B": gateway(s, "B", Path.cwd(), standin, redis_url, traces),
        }
        for gw in gws.values():
            load(gw.url, "/v1/embeddings", body, 1, 0.5, miss, auth)  # fills the cache (misses: warms the gateway)
        for r in range(a.rounds):
            for name in "AB" if r % 2 == 0 else "BA":
                pid = gws[name].proc.pid
                one = load(gws[name].url, "/v1/embeddings", body, 1, a.duration, miss, auth)
                c0 = cpu_s(pid)
                many = load(gws[name].url, "/v1/embeddings", body, conns, a.duration, miss, auth)
                served = many["requests_per_s"] * (a.duration + min(0.5, a.duration / 3))  # the warm-up's too
                cpu_us = (cpu_s(pid) - c0) / max(1.0, served) * 1e6
                figures[name]["p50"].append(one["p50_ms"])
                figures[name]["rps"].append(many["requests_per_s"])
                figures[name]["cpu"].append(cpu_us)
                print(f"round {r} {name}: 1 conn p50 {one['p50_ms']:.3f} ms, {conns} conns "
                      f"{many['requests_per_s']:,.0f} req/s, ~{cpu_us:.0f} us CPU per request", flush=True)  # fmt: skip
        if sink is not None:
            print(f"B's traces: {httpx.get(sink.url + '/_stats').json()} (OTLP posts and bytes the sink received)")
    med = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}
    for n, m in med.items():
        print(f"median {n}: p50 {m['p50']:.3f} ms, {m['rps']:,.0f} req/s, {m['cpu']:.0f} us CPU per request")
    print(f"B/A: p50 {med['B']['p50'] / med['A']['p50']:.3f}, req/s {med['B']['rps'] / med['A']['rps']:.3f}, "
          f"CPU per request {med['B']['cpu'] / med['A']['cpu']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
