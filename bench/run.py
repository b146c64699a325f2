"""The reproducible benchmark: one command.

    python -m bench.run [--quick] [--upstream-latency-ms 0] [--connections 32] [--duration 2] [--rounds 3]
                        [--write-readme] [--json bench/results/latest.json]

It starts, on free loopback ports: a redis-server, the stand-in upstream (bench/standin.py), the minimal
ASGI baseline (bench/baseline.py) and the gateway (`embedding-gateway serve`, 1 worker, then 2 workers),
and drives every scenario from a separate load-generator process (bench/loadgen.py) over keep-alive
HTTP/1.1 connections. Each figure is shown next to a baseline measured in the same run, as a ratio:
cache hits against the minimal ASGI app answering a body of the same size; upstream work against the
stand-in upstream called directly with the same work. The machine is shared and noisy: compare ratios.
The gateway and its baseline are loaded in turn, `--rounds` times each (one-connection and many-connection
loads alike); the table shows the median round's figures and every round's ratio.

`--quick` (CI smoke, a few seconds): one worker, short runs, a subset of scenarios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from . import rediscost
from .scenarios import calls_per_item, measure, scenarios
from .stack import ROOT, free_port, stack, stop, wait_ready

README_MARKS = ("<!-- bench:results:start -->", "<!-- bench:results:end -->")
TOP_MARKS = ("<!-- readme:bench:start -->", "<!-- readme:bench:end -->")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | scenario | 1 conn p50 / p99 (ms) | baseline 1 conn p50 | overhead p50 (ms) | conns | req/s "
        "| baseline req/s | ratio | ratio, every round | p50 / p99 (ms) at conns |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "scenario" not in r:
            continue
        base = "ASGI" if r["baseline"] == "asgi" else "upstream"
        one, many, b1, bm = r["one"], r["many"], r["base_one"], r["base_many"]
        lines.append(
            f"| {r['workers']} | {r['scenario']} | {one['p50_ms']:.3f} / {one['p99_ms']:.3f} "
            f"| {b1['p50_ms']:.3f} ({base}) | {one['p50_ms'] - b1['p50_ms']:.3f} | {r['connections']} "
            f"| {many['requests_per_s']:,.0f} "
            f"| {bm['requests_per_s']:,.0f} ({base}) | {ratio(many['requests_per_s'], bm['requests_per_s'])} "
            f"| {' '.join(f'{x:.2f}' for x in r.get('ratios', []))} | {many['p50_ms']:.2f} / {many['p99_ms']:.2f} |"
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
    """The table, stamped with its command, between the markers of bench/README.md and of the README."""
    stamp = f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)\n\n"
    for path, (first, last) in ((ROOT / "bench" / "README.md", README_MARKS), (ROOT / "README.md", TOP_MARKS)):
        text = path.read_text()
        start, end = text.index(first), text.index(last)
        path.write_text(text[: start + len(first)] + "\n" + stamp + md + "\n" + text[end:])


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
    ap.add_argument("--connections", type=int, default=32, help="of the many-connection loads (misses: 16)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, help="gateway and baseline loads in turn, per scenario (3; --quick: 1)")
    ap.add_argument("--workers", default="1,2", help="gateway worker counts to measure")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    ap.add_argument("--write-readme", action="store_true", help="put the table into bench/README.md")
    ap.add_argument("--only", default="", help="only the scenarios whose name contains this (e.g. miss)")
    a = ap.parse_args(argv)
    duration = 0.4 if a.quick else a.duration
    rounds = max(1, a.rounds or (1 if a.quick else 3))
    workers = [1] if a.quick else [int(w) for w in a.workers.split(",")]
    run = uuid.uuid4().hex[:8]
    results: list[dict[str, Any]] = []
    with stack() as s:
        redis_url = s.redis()
        standin = s.standin("--latency-ms", str(a.upstream_latency_ms))
        baseline = s.spawn(
            "baseline", [sys.executable, "-m", "bench.baseline", "--port", str(port := free_port())], port
        )
        wait_ready(baseline, "/")
        for n in workers:
            gw = s.gateway(f"gateway-{n}w", standin, redis_url, n)
            wait_ready(gw, "/healthz")
            time.sleep(0.5 if n > 1 else 0)  # let every worker come up
            for sc in [sc for sc in scenarios(f"{run}-{n}", a.quick) if a.only in sc.name]:
                print(f"[{n} worker(s)] {sc.name} ...", file=sys.stderr, flush=True)
                results.append({"workers": n, **measure(sc, gw, baseline, standin, a.connections, duration, rounds)})
            results.append({"workers": n, **calls_per_item(gw, standin, f"{run}-{n}", 100)})
            stop(gw)
    md = table(results)
    if not a.quick and not a.only:  # Redis CPU per hit, miss and limited request (bench/rediscost.py)
        cost = rediscost.measure(400, 16)
        results.append({"redis_cost": cost})
        md += "\n\nRedis CPU per request (`python -m bench.rediscost`):\n\n" + rediscost.table(cost)
    print(md)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1))
    if a.write_readme:
        flags = " ".join(readme_flags(argv if argv is not None else sys.argv[1:]))
        write_readme(md, f"python -m bench.run {flags}".strip())


if __name__ == "__main__":
    main()
